#!/usr/bin/env python3
"""Independent S3 client (boto3) for the ccm S3 adapter tests.

  check_s3.py read   ENDPOINT BUCKET KEY      -> prints JSON {size, sha256_metadata, sha256_actual}
  check_s3.py tamper ENDPOINT BUCKET KEY FILE -> overwrites KEY with FILE's bytes, keeping the
                                                 old sha256 metadata (simulated corruption)
Any credentials work against moto; real servers take AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
"""
import hashlib
import json
import os
import sys

import boto3
from botocore.config import Config


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "check"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "check"),
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def main(argv):
    if len(argv) < 5 or argv[1] not in ("read", "tamper"):
        sys.stderr.write(__doc__)
        return 2
    cmd, endpoint, bucket, key = argv[1:5]
    s3 = client(endpoint)
    if cmd == "read":
        obj = s3.get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
        print(json.dumps({
            "size": len(body),
            "sha256_metadata": obj.get("Metadata", {}).get("sha256"),
            "sha256_actual": hashlib.sha256(body).hexdigest(),
            "content_type": obj.get("ContentType"),
            "sse": obj.get("ServerSideEncryption"),
        }))
        return 0
    with open(argv[5], "rb") as f:
        data = f.read()
    old = s3.head_object(Bucket=bucket, Key=key)
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata=old.get("Metadata", {}))
    print(json.dumps({"tampered": key, "size": len(data)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
