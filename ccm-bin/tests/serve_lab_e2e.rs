//! End to end on real servers: two and then three `ccm serve` daemons on etcd, the EC2
//! provider on moto and the CML adapter against the CML test server (`scripts/e2e_lab.py`
//! drives them). A SIGKILL of the controller leader right after its launch call: the standby
//! adopts the instance and launches nothing twice (counted with boto3 by the fleet's tag). A
//! SIGKILL of the lab loop's leader inside a lab import: the next leader finds the lab by its
//! title, the CML server sees one import, one start, one stop and one wipe, and the session
//! runs through every state to ARCHIVED. An instance terminated behind ccm's back: its booked
//! session requeues and is served on a new instance.
//!
//! The servers come from `scripts/test.sh`; a missing one fails the test, it is never skipped.
#![cfg(feature = "all-adapters")]

mod support;

use std::process::Command;
use support::*;

#[test]
fn leaders_killed_mid_launch_and_mid_import_lose_nothing_and_do_nothing_twice() {
    let etcd = need("CCM_TEST_ETCD");
    let mongo = need("CCM_TEST_MONGODB_URI");
    let s3 = need("CCM_TEST_S3_ENDPOINT");
    let ec2 = need("CCM_TEST_EC2_ENDPOINT");
    let python = need("CCM_TEST_PYTHON");
    let nanos = unique();
    let out = Command::new(&python)
        .arg(root().join("scripts/e2e_lab.py"))
        .env("E2E_CCM_BIN", env!("CARGO_BIN_EXE_ccm"))
        .env("E2E_ROOT", root())
        .env("E2E_ETCD", &etcd)
        .env("E2E_ETCDCTL", etcdctl())
        .env("E2E_PREFIX", format!("/ccm-e2e-lab-{nanos}"))
        .env("E2E_MONGODB_URI", &mongo)
        .env("E2E_S3_ENDPOINT", &s3)
        .env("E2E_EC2_ENDPOINT", &ec2)
        .env(
            "E2E_LAB",
            root().join("ccm-core/tests/data/labs/ccna-basic.yaml"),
        )
        .output()
        .expect("run scripts/e2e_lab.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("[e2e-lab] ok"),
        "e2e lab client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");
}
