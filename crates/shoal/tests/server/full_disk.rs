//! A real full disk (root only: it mounts a small tmpfs as the data directory; run by
//! `scripts/full-disk`, which CI calls). The node must refuse writes before the file system
//! is full, so its engine never sees ENOSPC (fjall would poison itself and every shard
//! would stop), keep answering reads and deletes, and take writes again once space is
//! freed, without a restart.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::Node;

const MIB: usize = 1 << 20;
/// The file system: room for the reserve, a ballast file and a few hundred MiB of data.
const TMPFS_MIB: usize = 1536;
const BALLAST_MIB: usize = 200;
const RESERVE_MIB: &str = "1024";
/// Most 1 MiB SETs sent before the test gives up waiting for a refusal.
const MAX_WRITES: usize = 2000;

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, mib: usize) -> Mount {
        fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed ({status}): run as root"
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn ballast(path: &Path, mib: usize) {
    let mut file = File::create(path).expect("ballast file");
    let chunk = vec![0x5a_u8; MIB];
    for _ in 0..mib {
        file.write_all(&chunk).expect("write ballast");
    }
    file.sync_all().expect("sync ballast");
}

#[test]
#[ignore = "needs root to mount a tmpfs; run by scripts/full-disk"]
fn a_real_full_disk_refuses_writes_before_enospc_and_recovers_without_a_restart() {
    let mut node = Node::new();
    let mount = Mount::tmpfs(&node.data_dir(), TMPFS_MIB);
    let ballast_path = mount.0.join("ballast");
    ballast(&ballast_path, BALLAST_MIB);
    node.extra_args = vec!["--min-free-disk-mib".into(), RESERVE_MIB.into()];
    let mut server = node.start();
    let mut con = server.connect();

    let value = vec![b'v'; MIB];
    let mut written = 0;
    let refusal = loop {
        assert!(
            written < MAX_WRITES,
            "{MAX_WRITES} MiB written into a {TMPFS_MIB} MiB file system and nothing refused"
        );
        let answer: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("big:{written}"))
            .arg(&value)
            .query(&mut con);
        match answer {
            Ok(()) => written += 1,
            Err(e) => break e.to_string(),
        }
    };
    assert!(written > 0, "the very first write was refused: {refusal}");
    assert!(
        refusal.contains("disk full on node 1") && refusal.contains("--min-free-disk-mib"),
        "{refusal}"
    );

    // Reads and deletes keep working; the engine never hit the wall.
    let first: Vec<u8> = redis::cmd("GET").arg("big:0").query(&mut con).expect("GET");
    assert_eq!(first.len(), MIB);
    let deleted: u64 = redis::cmd("DEL").arg("big:1").query(&mut con).expect("DEL");
    assert_eq!(deleted, 1);

    // Space freed: writes resume by themselves, within a few samples of free space.
    fs::remove_file(&ballast_path).expect("remove ballast");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer: redis::RedisResult<()> =
            redis::cmd("SET").arg("after").arg("space").query(&mut con);
        match answer {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(e.to_string().contains("disk full"), "{e}");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("writes did not resume after freeing {BALLAST_MIB} MiB: {e}"),
        }
    }
    let log = server.log();
    for wall in ["No space left", "Poisoned"] {
        assert!(
            !log.contains(wall),
            "the engine hit the wall ({wall}):\n{log}"
        );
    }
    server.sigterm();
    assert!(server.wait_exit().success());
    drop(server);
    drop(mount);
}
