#!/usr/bin/env python3
"""Independent reader for ccm's MongoDB spec store (used by the Rust adapter tests).

Reads what ccm wrote with pymongo, not with ccm's code, and prints one JSON document:

    {
      "collections": {"<collection>": [{"<field>": {"type": "<bson type>", "value": <json>}}]},
      "indexes": {"<collection>": [{"name": ..., "key": {...}, "unique": bool,
                                    "expireAfterSeconds": int|null}]},
      "latest_by_version_key": {"<definition name>": "<version>"},
      "audit_by_subject": {"<subject>": ["<event id>", ...]}   # sorted by time_ns, _id
    }

BSON types are named as MongoDB names them: string, int, long, double, bool, date, null,
object, array.

Usage: check_mongo.py URI DATABASE
"""
import datetime
import json
import sys

import bson
import pymongo

COLLECTIONS = ["lablet_definitions", "worker_templates", "audit_events"]


def bson_type(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, bson.int64.Int64):
        return "long"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, datetime.datetime):
        return "date"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return type(v).__name__


def plain(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return v.isoformat()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return int(v)
    return str(v)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    uri, database = sys.argv[1], sys.argv[2]
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    db = client[database]
    out = {"collections": {}, "indexes": {}, "latest_by_version_key": {}, "audit_by_subject": {}}
    for name in COLLECTIONS:
        coll = db[name]
        out["collections"][name] = [
            {k: {"type": bson_type(v), "value": plain(v)} for k, v in doc.items()}
            for doc in coll.find({}).sort("_id", 1)
        ]
        out["indexes"][name] = [
            {
                "name": ix.get("name"),
                "key": {k: int(d) for k, d in ix.get("key", {}).items()},
                "unique": bool(ix.get("unique", False)),
                "expireAfterSeconds": ix.get("expireAfterSeconds"),
            }
            for ix in coll.list_indexes()
        ]
    for def_name in db["lablet_definitions"].distinct("name"):
        top = db["lablet_definitions"].find({"name": def_name}).sort("version_key", -1).limit(1)
        for doc in top:
            out["latest_by_version_key"][def_name] = doc["version"]
    for subject in db["audit_events"].distinct("subject"):
        out["audit_by_subject"][subject] = [
            d["_id"]
            for d in db["audit_events"].find({"subject": subject}).sort([("time_ns", 1), ("_id", 1)])
        ]
    json.dump(out, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
