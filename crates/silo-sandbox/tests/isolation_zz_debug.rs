#[path = "isolation_harness.rs"]
mod harness;
use harness::*;
#[test]
fn debug() {
    let dirs = HostDirs::new();
    let iso = dirs.isolation(silo_sandbox::Rootfs::HostView);
    let r = in_namespaces(|| {
        silo_sandbox::isolation::enter(&iso).map_err(|e| e.to_string())?;
        let l = |p: &str| format!("{p}: {:?}\n", std::fs::read_dir(p).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()));
        Err(l("/sys") + &l("/sys/fs") + &l("/sys/class/net") + &std::fs::read_to_string("/proc/self/mountinfo").unwrap())
    });
    dirs.finish(Ok(()));
    panic!("{r:?}");
}
