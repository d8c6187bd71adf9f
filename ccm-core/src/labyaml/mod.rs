//! Lab YAML: port templates from node tags and format-preserving `${PORT_<NAME>}` rewriting.
