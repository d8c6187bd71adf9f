//! The OpenAPI 3.0 document of the API, written by hand next to the routes it describes (a
//! test checks that every route of [`super::routes::table`] is in it and vice versa).

use axum::response::{IntoResponse, Json, Response};
use serde_json::{json, Value};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Response {
    Json(document()).into_response()
}

fn err(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(desc: &str, schema: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn items(desc: &str, schema: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": {
        "type": "object", "required": ["items"],
        "properties": { "items": { "type": "array", "items": { "$ref": format!("#/components/schemas/{schema}") } } }
    } } } })
}

fn path_param(name: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": desc, "schema": { "type": "string" } })
}

fn query_param(name: &str, desc: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": schema })
}

fn body(schema: &str, required: bool) -> Value {
    json!({ "required": required, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn common(mut responses: Value, mutating: bool) -> Value {
    let r = responses.as_object_mut().expect("responses is an object");
    r.insert("401".into(), err("a bearer token is needed"));
    r.insert("503".into(), err("a backend is unavailable"));
    r.insert(
        "500".into(),
        err("a backend failed or a stored record is corrupt"),
    );
    if mutating {
        r.insert("413".into(), err("the body is too large"));
        r.insert("422".into(), err("invalid input; `field` names it"));
    }
    responses
}

/// The document.
pub fn document() -> Value {
    let at = query_param(
        "at",
        "plan at this instant (RFC 3339; default now)",
        json!({ "type": "string", "format": "date-time" }),
    );
    let id = path_param("id", "id");
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ccm lablet API",
            "version": "1",
            "description": "Register lablet definitions, book and cancel sessions, ask why a session waits, see the fleet and the plan. Errors are {\"error\": {\"code\", \"message\", \"field\"?}}."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/api/v1/definitions": {
                "post": {
                    "operationId": "registerDefinition",
                    "summary": "Register a definition with its lab YAML (port template from node tags)",
                    "requestBody": body("DefinitionCreate", true),
                    "responses": common(json!({
                        "201": ok("created (first version of the name, or a new version)", "Registered"),
                        "200": ok("the same content was registered before", "Registered"),
                        "409": err("different content under an existing version (version_conflict)")
                    }), true)
                },
                "get": {
                    "operationId": "listDefinitions",
                    "summary": "The latest version of every definition",
                    "responses": common(json!({ "200": items("definitions", "Definition") }), false)
                }
            },
            "/api/v1/definitions/{id}": {
                "get": {
                    "operationId": "getDefinition",
                    "summary": "A definition by id (name@version) or a name's latest version",
                    "parameters": [ id.clone() ],
                    "responses": common(json!({ "200": ok("the definition", "Definition"), "404": err("no such definition") }), false)
                }
            },
            "/api/v1/definitions/{id}/versions": {
                "get": {
                    "operationId": "listDefinitionVersions",
                    "summary": "Every version of a definition name, oldest first",
                    "parameters": [ id.clone() ],
                    "responses": common(json!({ "200": items("versions", "Definition"), "404": err("no such definition") }), false)
                }
            },
            "/api/v1/sessions": {
                "post": {
                    "operationId": "bookSession",
                    "summary": "Book a session; the planner admits or rejects it (dry_run answers without writing)",
                    "requestBody": body("BookingRequest", true),
                    "responses": common(json!({
                        "201": ok("booked", "BookingOutcome"),
                        "200": ok("a dry run, or the booking an idempotency key made before", "BookingOutcome"),
                        "404": err("unknown definition"),
                        "409": err("not admitted (not_admitted, with `refusal`), or the idempotency key was used for another booking")
                    }), true)
                },
                "get": {
                    "operationId": "listSessions",
                    "summary": "Sessions, filtered, one page (by id)",
                    "parameters": [
                        query_param("state", "comma-separated states", json!({ "type": "string" })),
                        query_param("owner_id", "owner", json!({ "type": "string" })),
                        query_param("worker_id", "bound worker", json!({ "type": "string" })),
                        query_param("definition", "definition id or name", json!({ "type": "string" })),
                        query_param("from", "slots ending after (RFC 3339)", json!({ "type": "string", "format": "date-time" })),
                        query_param("to", "slots starting before (RFC 3339)", json!({ "type": "string", "format": "date-time" })),
                        query_param("after", "page after this session id", json!({ "type": "string" })),
                        query_param("limit", "page size (1-1000, default 100)", json!({ "type": "integer", "minimum": 1, "maximum": 1000 }))
                    ],
                    "responses": common(json!({ "200": ok("a page", "SessionPage"), "422": err("a bad filter; `field` names it") }), false)
                }
            },
            "/api/v1/sessions/{id}": {
                "get": {
                    "operationId": "getSession",
                    "parameters": [ id.clone() ],
                    "responses": common(json!({ "200": ok("the session", "Session"), "404": err("no such session") }), false)
                }
            },
            "/api/v1/sessions/{id}/cancel": {
                "post": {
                    "operationId": "cancelSession",
                    "summary": "Cancel: TERMINATED, capacity and ports released in the same transaction",
                    "parameters": [ id.clone() ],
                    "requestBody": body("CancelRequest", false),
                    "responses": common(json!({
                        "200": ok("the cancelled session", "Session"),
                        "404": err("no such session"),
                        "409": err("the session already ended")
                    }), true)
                }
            },
            "/api/v1/sessions/{id}/connect": {
                "post": {
                    "operationId": "connectSession",
                    "summary": "The user connected: a READY session is RUNNING from now (a RUNNING one is returned unchanged)",
                    "parameters": [ id.clone() ],
                    "responses": common(json!({
                        "200": ok("the running session", "Session"),
                        "404": err("no such session"),
                        "409": err("the session is not READY (not_ready)")
                    }), true)
                }
            },
            "/api/v1/sessions/{id}/explain": {
                "get": {
                    "operationId": "explainSession",
                    "summary": "Why the session is (still) PENDING: the scheduler's filters and the planner",
                    "parameters": [ id.clone() ],
                    "responses": common(json!({ "200": ok("the explanation", "Explanation"), "404": err("no such session") }), false)
                }
            },
            "/api/v1/sessions/{id}/lab.yaml": {
                "get": {
                    "operationId": "getSessionLabYaml",
                    "summary": "The lab YAML with the session's ports filled in (once bound)",
                    "parameters": [ id.clone() ],
                    "responses": common(json!({
                        "200": { "description": "the rewritten lab YAML", "content": { "application/yaml": { "schema": { "type": "string" } } } },
                        "404": err("no such session"),
                        "409": err("not bound yet (not_bound)")
                    }), false)
                }
            },
            "/api/v1/workers": {
                "get": {
                    "operationId": "listWorkers",
                    "responses": common(json!({ "200": items("workers", "Worker") }), false)
                }
            },
            "/api/v1/workers/{id}": {
                "get": {
                    "operationId": "getWorker",
                    "parameters": [ id ],
                    "responses": common(json!({ "200": ok("the worker", "Worker"), "404": err("no such worker") }), false)
                }
            },
            "/api/v1/templates": {
                "get": {
                    "operationId": "listTemplates",
                    "responses": common(json!({ "200": items("templates", "Template") }), false)
                }
            },
            "/api/v1/templates/{name}": {
                "get": {
                    "operationId": "getTemplate",
                    "parameters": [ path_param("name", "template name") ],
                    "responses": common(json!({ "200": ok("the template", "Template"), "404": err("no such template") }), false)
                }
            },
            "/api/v1/plan/preview": {
                "get": {
                    "operationId": "previewPlan",
                    "summary": "The plan the controller would make, and the actions due",
                    "parameters": [ at.clone() ],
                    "responses": common(json!({ "200": ok("the plan", "Preview"), "422": err("a bad `at`") }), false)
                }
            },
            "/api/v1/landscape": {
                "get": {
                    "operationId": "landscape",
                    "summary": "Demand against billed capacity per 15 minutes over 24 hours",
                    "parameters": [ at ],
                    "responses": common(json!({ "200": ok("the landscape", "Landscape"), "422": err("a bad `at`") }), false)
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": { "200": { "description": "this document", "content": { "application/json": { "schema": { "type": "object" } } } } }
                }
            }
        }
    })
}

fn schemas() -> Value {
    let ts = json!({ "type": "string", "format": "date-time" });
    let nts = json!({ "type": "string", "format": "date-time", "nullable": true });
    let nstr = json!({ "type": "string", "nullable": true });
    let uint = json!({ "type": "integer", "minimum": 0 });
    let resources = json!({
        "type": "object", "required": ["cpu_cores", "memory_gb", "storage_gb"],
        "properties": { "cpu_cores": uint, "memory_gb": uint, "storage_gb": uint }
    });
    let load = json!({
        "type": "object", "required": ["cpu_cores", "memory_gb", "storage_gb", "nodes"],
        "properties": { "cpu_cores": uint, "memory_gb": uint, "storage_gb": uint, "nodes": uint }
    });
    let states = json!({ "type": "string", "enum": [
        "PENDING", "SCHEDULED", "INSTANTIATING", "READY", "RUNNING", "COLLECTING", "GRADING",
        "STOPPING", "STOPPED", "ARCHIVED", "EXPIRED", "TERMINATED"
    ] });
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": { "error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string" },
                    "message": { "type": "string" },
                    "field": { "type": "string" },
                    "refusal": { "$ref": "#/components/schemas/Refusal" }
                }
            } }
        },
        "Resources": resources,
        "Load": load,
        "DefinitionCreate": {
            "type": "object", "required": ["name", "resource_requirements", "lab_yaml"],
            "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$" },
                "version": { "type": "string", "nullable": true, "description": "semver; default: 1.0.0, or the latest's next patch when the content changed" },
                "resource_requirements": { "$ref": "#/components/schemas/Resources" },
                "node_count": { "type": "integer", "minimum": 1, "nullable": true },
                "license_affinity": { "type": "array", "items": { "type": "string", "enum": ["PERSONAL", "ENTERPRISE"] } },
                "ami_requirements": { "type": "object" },
                "max_duration_minutes": { "type": "integer", "minimum": 1, "nullable": true },
                "created_by": nstr,
                "lab_yaml": { "type": "string", "maxLength": 1048576 }
            }
        },
        "Definition": {
            "type": "object",
            "required": ["id", "name", "version", "lab_artifact_uri", "lab_yaml_hash", "resource_requirements", "node_count", "port_template", "max_duration_minutes"],
            "properties": {
                "id": { "type": "string" }, "name": { "type": "string" }, "version": { "type": "string" },
                "lab_artifact_uri": { "type": "string" }, "lab_yaml_hash": { "type": "string" },
                "resource_requirements": { "$ref": "#/components/schemas/Resources" },
                "node_count": uint,
                "license_affinity": { "type": "array", "items": { "type": "string" } },
                "ami_requirements": { "type": "object" },
                "port_template": { "type": "array", "items": { "type": "object", "required": ["name", "protocol"],
                    "properties": { "name": { "type": "string" }, "protocol": { "type": "string" }, "description": { "type": "string" } } } },
                "max_duration_minutes": uint,
                "created_at": nts, "created_by": nstr
            }
        },
        "Registered": {
            "type": "object", "required": ["outcome", "definition"],
            "properties": {
                "outcome": { "type": "string", "enum": ["created", "new_version", "unchanged"] },
                "definition": { "$ref": "#/components/schemas/Definition" }
            }
        },
        "BookingRequest": {
            "type": "object", "required": ["definition_id", "owner_id"], "additionalProperties": false,
            "properties": {
                "definition_id": { "type": "string", "description": "name@version, or a name (its latest version)" },
                "definition_version": nstr,
                "timeslot_start": nts, "timeslot_end": nts,
                "owner_id": { "type": "string", "maxLength": 256 },
                "region": nstr, "reservation_id": nstr, "idempotency_key": nstr,
                "dry_run": { "type": "boolean" },
                "queue": { "type": "boolean", "description": "store it even when the plan cannot serve it" }
            }
        },
        "Refusal": {
            "type": "object", "required": ["constraint", "reason", "workers_rejected", "templates"],
            "properties": {
                "constraint": { "type": "string" }, "reason": { "type": "string" },
                "workers_rejected": { "type": "object", "additionalProperties": { "type": "integer" } },
                "templates": { "type": "array", "items": { "type": "object" } },
                "earliest_start": nts
            }
        },
        "Admission": {
            "type": "object", "required": ["decision"],
            "properties": {
                "decision": { "type": "string", "enum": ["accepted", "rejected"] },
                "placement": { "type": "object", "required": ["kind"], "properties": { "kind": { "type": "string", "enum": ["worker", "launch", "beyond_horizon"] } } },
                "ready_by": ts, "start": ts, "end": ts,
                "constraint": { "type": "string" }, "reason": { "type": "string" },
                "earliest_start": nts
            }
        },
        "BookingOutcome": {
            "type": "object", "required": ["admission", "created", "dry_run", "queued"],
            "properties": {
                "session": { "allOf": [ { "$ref": "#/components/schemas/Session" } ], "nullable": true },
                "admission": { "$ref": "#/components/schemas/Admission" },
                "created": { "type": "boolean" }, "dry_run": { "type": "boolean" }, "queued": { "type": "boolean" }
            }
        },
        "Session": {
            "type": "object",
            "required": ["id", "definition_id", "definition_version", "state", "owner_id", "created_at", "updated_at"],
            "properties": {
                "id": { "type": "string" }, "definition_id": { "type": "string" }, "definition_version": { "type": "string" },
                "state": states,
                "state_history": { "type": "array", "items": { "type": "object" } },
                "worker_id": nstr,
                "allocated_ports": { "type": "object", "additionalProperties": { "type": "integer" } },
                "timeslot": { "type": "object", "nullable": true, "properties": { "start": ts, "end": ts } },
                "region": nstr, "owner_id": { "type": "string" }, "reservation_id": nstr,
                "created_at": ts, "updated_at": ts, "retry_count": uint
            }
        },
        "SessionPage": {
            "type": "object", "required": ["items", "total"],
            "properties": {
                "items": { "type": "array", "items": { "$ref": "#/components/schemas/Session" } },
                "next": nstr, "total": uint
            }
        },
        "CancelRequest": {
            "type": "object", "additionalProperties": false,
            "properties": { "reason": { "type": "string", "maxLength": 256 } }
        },
        "Explanation": {
            "type": "object", "required": ["session_id", "state", "summary", "due"],
            "properties": {
                "session_id": { "type": "string" }, "state": states, "summary": { "type": "string" },
                "due_at": nts, "due": { "type": "boolean" },
                "unschedulable": { "type": "object", "nullable": true },
                "fits_on": nstr,
                "planned": { "allOf": [ { "$ref": "#/components/schemas/Admission" } ], "nullable": true }
            }
        },
        "Worker": {
            "type": "object", "required": ["id", "template", "region", "state", "capacity", "allocated", "free", "ports", "sessions"],
            "properties": {
                "id": { "type": "string" }, "template": { "type": "string" }, "region": { "type": "string" },
                "state": { "type": "string" },
                "capacity": { "$ref": "#/components/schemas/Load" },
                "allocated": { "$ref": "#/components/schemas/Load" },
                "free": { "$ref": "#/components/schemas/Load" },
                "ports": { "type": "object", "required": ["first", "last", "allocated", "free", "by_session"],
                    "properties": { "first": uint, "last": uint, "allocated": uint, "free": uint, "by_session": { "type": "object" } } },
                "sessions": { "type": "array", "items": { "type": "string" } },
                "cml_version": { "type": "string" }, "license_type": { "type": "string" }
            }
        },
        "Template": {
            "type": "object", "required": ["name", "instance_type", "capacity", "license_type", "max_nodes", "regions"],
            "properties": {
                "name": { "type": "string" }, "instance_type": { "type": "string" },
                "capacity": { "$ref": "#/components/schemas/Resources" },
                "license_type": { "type": "string" }, "max_nodes": uint,
                "regions": { "type": "array", "items": { "type": "string" } }
            }
        },
        "Preview": {
            "type": "object", "required": ["plan", "due"],
            "properties": {
                "plan": { "type": "object", "required": ["now", "workers", "assignments", "actions", "unserved", "cost"] },
                "due": { "type": "array", "items": { "type": "object", "required": ["action", "worker_id", "reason"],
                    "properties": { "action": { "type": "string" }, "worker_id": { "type": "string" }, "reason": { "type": "string" } } } }
            }
        },
        "Landscape": {
            "type": "object", "required": ["now", "bucket_minutes", "buckets", "cost_usd"],
            "properties": {
                "now": ts, "bucket_minutes": uint, "cost_usd": { "type": "number" },
                "buckets": { "type": "array", "items": { "type": "object",
                    "required": ["start", "end", "sessions", "demand", "workers", "capacity", "unserved"],
                    "properties": {
                        "start": ts, "end": ts, "sessions": uint, "workers": uint, "unserved": uint,
                        "demand": { "$ref": "#/components/schemas/Load" },
                        "capacity": { "$ref": "#/components/schemas/Load" }
                    } } }
            }
        }
    })
}

/// Every (method, path) the document lists.
#[cfg(test)]
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (p, ops) in paths {
            if let Some(ops) = ops.as_object() {
                for m in ops.keys() {
                    out.push((m.clone(), p.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let mut routes: Vec<(String, String)> = super::super::routes::table()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        routes.sort();
        assert_eq!(routes, operations(&document()));
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
        }
    }
}
