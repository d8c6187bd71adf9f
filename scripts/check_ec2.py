#!/usr/bin/env python3
"""Independent EC2 client (boto3) for the ccm EC2 adapter tests.

  check_ec2.py instances ENDPOINT REGION WORKER_ID
      -> prints JSON {"live": N, "instances": [{id, state, type, image, tags}]} of every
         instance tagged ccm:worker-id=WORKER_ID in REGION (live = not terminated)
  check_ec2.py terminate ENDPOINT REGION WORKER_ID
      -> terminates those instances behind ccm's back; prints JSON {"terminated": [ids]}
Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else test/test (what moto accepts).
"""
import json
import os
import sys

import boto3


def client(endpoint, region):
    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def instances(ec2, worker_id):
    out = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:ccm:worker-id", "Values": [worker_id]}]
    )
    for page in pages:
        for r in page["Reservations"]:
            for i in r["Instances"]:
                out.append({
                    "id": i["InstanceId"],
                    "state": i["State"]["Name"],
                    "type": i["InstanceType"],
                    "image": i["ImageId"],
                    "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])},
                })
    return out


def main(argv):
    if len(argv) != 5 or argv[1] not in ("instances", "terminate"):
        sys.stderr.write(__doc__)
        return 2
    cmd, endpoint, region, worker_id = argv[1:5]
    ec2 = client(endpoint, region)
    found = instances(ec2, worker_id)
    if cmd == "instances":
        live = [i for i in found if i["state"] != "terminated"]
        print(json.dumps({"live": len(live), "instances": found}))
        return 0
    ids = [i["id"] for i in found if i["state"] != "terminated"]
    if ids:
        ec2.terminate_instances(InstanceIds=ids)
    print(json.dumps({"terminated": ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
