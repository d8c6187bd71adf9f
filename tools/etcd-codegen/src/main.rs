//! Generates ccm's etcd v3 gRPC client code (client side only) from the verbatim etcd .proto
//! copies in `ccm-adapters/proto/`.
//!
//! Usage: `etcd-codegen <proto-dir> <out-dir>` (see `scripts/gen-etcd-proto.sh`).
//!
//! Before running protoc (the one vendored by the `protoc-bin-vendored` crate), the protos
//! are trimmed into a temporary directory:
//! - the grpc-gateway / openapiv2 annotations (`google.api.http`, `openapiv2_swagger`) and
//!   etcd's `versionpb` field/message annotations are removed, with their imports, so no
//!   other .proto dependency is needed (they only matter to etcd's HTTP gateway and its
//!   version checks, not to the wire format);
//! - only the RPCs in [`KEEP_RPCS`] are kept (services without one are dropped);
//! - only the messages and enums reachable from those RPCs are kept;
//! - an import left unreferenced (e.g. `authpb`) is dropped.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The RPCs ccm calls, by service.
const KEEP_RPCS: &[(&str, &[&str])] = &[
    ("KV", &["Range", "Put", "DeleteRange", "Txn", "Compact"]),
    ("Watch", &["Watch"]),
    ("Lease", &["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive"]),
    ("Maintenance", &["Status"]),
    ("Auth", &["Authenticate"]),
];

/// The protos read, relative to the proto directory; the first is trimmed, the others are
/// imported by it and kept whole when referenced.
const RPC_PROTO: &str = "etcd/api/etcdserverpb/rpc.proto";
const IMPORTED: &[(&str, &str)] = &[
    ("etcd/api/mvccpb/kv.proto", "mvccpb."),
    ("etcd/api/authpb/auth.proto", "authpb."),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: etcd-codegen <proto-dir> <out-dir>");
        std::process::exit(2);
    }
    if let Err(e) = run(Path::new(&args[1]), Path::new(&args[2])) {
        eprintln!("etcd-codegen: {e}");
        std::process::exit(1);
    }
}

fn run(proto_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let read = |rel: &str| {
        std::fs::read_to_string(proto_dir.join(rel))
            .map_err(|e| format!("{}: {e}", proto_dir.join(rel).display()))
    };
    let tmp = std::env::temp_dir().join(format!("etcd-codegen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let rpc = trim_rpc(&read(RPC_PROTO)?)?;
    let mut inputs = vec![write(&tmp, RPC_PROTO, &rpc)?];
    for (rel, _) in IMPORTED {
        if rpc.contains(&format!("import \"{rel}\";")) {
            inputs.push(write(&tmp, rel, &strip_annotations(&read(rel)?))?);
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(|e| format!("protoc: {e}"))?;
    // SAFETY-free: prost-build reads PROTOC; this program is single-threaded here.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        .out_dir(out_dir)
        .compile_protos(&inputs, &[tmp.clone()])
        .map_err(|e| format!("protoc/tonic-prost-build: {e}"))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn write(tmp: &Path, rel: &str, text: &str) -> Result<PathBuf, String> {
    let p = tmp.join(rel);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// Removes the gateway, openapiv2 and versionpb annotations and their imports.
fn strip_annotations(text: &str) -> String {
    let rules = [
        // The file-level swagger block (nested braces; it ends at the first `};` line).
        (r"(?ms)^option \(grpc\.gateway\.[^)]*\) = \{.*?^\};\n", ""),
        // (one level of nested braces: `additional_bindings { ... }`).
        (r"\n\s*option \(google\.api\.http\) = \{(?:[^{}]|\{[^{}]*\})*\};", ""),
        (r#"\n\s*option \(versionpb\.[a-z_]+\) = "[^"]*";"#, ""),
        (r#"\s*\[\(versionpb\.[a-z_]+\)\s*=\s*"[^"]*"\]"#, ""),
        (r#"(?m)^import "(google/api|protoc-gen-openapiv2|etcd/api/versionpb)/[^"]*";\n"#, ""),
        (r"(?m)^// for grpc-gateway\n", ""),
    ];
    let mut s = text.to_string();
    for (re, by) in rules {
        s = Regex::new(re).expect("valid rule").replace_all(&s, by).into_owned();
    }
    s
}

/// One top-level item of a proto file: its leading comment lines and its text.
struct Item {
    kind: String,
    name: String,
    text: String,
}

/// Splits a proto file into its top-level items (everything else is a "head" item).
fn items(text: &str) -> Result<Vec<Item>, String> {
    let head = Regex::new(r"^(service|message|enum)\s+(\w+)\s*\{").expect("valid");
    let mut out = Vec::new();
    let mut pending = String::new(); // comments and blank lines before the next item
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(c) = head.captures(line) {
            let mut body = format!("{pending}{line}\n");
            pending.clear();
            let mut depth = brace_delta(line);
            while depth > 0 {
                let l = lines
                    .next()
                    .ok_or_else(|| format!("unbalanced braces in {} {}", &c[1], &c[2]))?;
                depth += brace_delta(l);
                body.push_str(l);
                body.push('\n');
            }
            out.push(Item {
                kind: c[1].to_string(),
                name: c[2].to_string(),
                text: body,
            });
        } else if t.starts_with("//") || t.is_empty() {
            pending.push_str(line);
            pending.push('\n');
        } else {
            out.push(Item {
                kind: "head".into(),
                name: String::new(),
                text: format!("{pending}{line}\n"),
            });
            pending.clear();
        }
    }
    Ok(out)
}

fn brace_delta(line: &str) -> i32 {
    let code = line.split("//").next().unwrap_or("");
    code.matches('{').count() as i32 - code.matches('}').count() as i32
}

/// Keeps only the wanted RPCs of a service block; `None` when none is left.
fn trim_service(item: &Item, keep: &[&str], types: &mut BTreeSet<String>) -> Option<String> {
    let rpc = Regex::new(r"^\s*rpc\s+(\w+)\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)").expect("valid");
    let mut lines = item.text.lines();
    let mut out = String::new();
    let mut pending = String::new();
    let mut kept = 0;
    for line in lines.by_ref() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("service ") {
            break;
        }
    }
    let mut rest: Vec<&str> = lines.collect();
    let close = rest.pop().unwrap_or("}");
    let mut i = 0;
    while i < rest.len() {
        let line = rest[i];
        if let Some(c) = rpc.captures(line) {
            let mut block = format!("{pending}{line}\n");
            pending.clear();
            let mut depth = brace_delta(line);
            while depth > 0 && i + 1 < rest.len() {
                i += 1;
                depth += brace_delta(rest[i]);
                block.push_str(rest[i]);
                block.push('\n');
            }
            if keep.contains(&&c[1]) {
                types.insert(c[2].to_string());
                types.insert(c[3].to_string());
                out.push_str(&block);
                kept += 1;
            }
        } else {
            pending.push_str(line);
            pending.push('\n');
        }
        i += 1;
    }
    out.push_str(close);
    out.push('\n');
    (kept > 0).then_some(out)
}

fn trim_rpc(text: &str) -> Result<String, String> {
    let text = strip_annotations(text);
    let all = items(&text)?;
    let keep: BTreeMap<&str, &[&str]> = KEEP_RPCS.iter().copied().collect();
    let mut wanted = BTreeSet::new();
    let mut services = BTreeMap::new();
    for it in all.iter().filter(|i| i.kind == "service") {
        if let Some(rpcs) = keep.get(it.name.as_str()) {
            if let Some(s) = trim_service(it, rpcs, &mut wanted) {
                services.insert(it.name.clone(), s);
            }
        }
    }
    for (svc, _) in KEEP_RPCS {
        if !services.contains_key(*svc) {
            return Err(format!("service {svc} not found in {RPC_PROTO}"));
        }
    }
    // Messages and enums reachable from the kept RPCs.
    let types: BTreeMap<&str, &Item> = all
        .iter()
        .filter(|i| i.kind == "message" || i.kind == "enum")
        .map(|i| (i.name.as_str(), i))
        .collect();
    let ident = Regex::new(r"\b[A-Za-z_]\w*\b").expect("valid");
    let mut reached = BTreeSet::new();
    let mut queue: Vec<String> = wanted.into_iter().collect();
    while let Some(t) = queue.pop() {
        let Some(item) = types.get(t.as_str()) else {
            continue;
        };
        if !reached.insert(t.clone()) {
            continue;
        }
        let code: String = item
            .text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        for m in ident.find_iter(&code) {
            if types.contains_key(m.as_str()) && !reached.contains(m.as_str()) {
                queue.push(m.as_str().to_string());
            }
        }
    }
    let mut out = String::new();
    for it in &all {
        match it.kind.as_str() {
            "service" => {
                if let Some(s) = services.get(&it.name) {
                    out.push_str(s);
                }
            }
            "head" => out.push_str(&it.text),
            _ if reached.contains(&it.name) => out.push_str(&it.text),
            _ => {}
        }
    }
    // Drop imports no kept item refers to.
    for (rel, pkg) in IMPORTED {
        let import = format!("import \"{rel}\";\n");
        if !out.replace(&import, "").contains(pkg) {
            out = out.replace(&import, "");
        }
    }
    Ok(out)
}
