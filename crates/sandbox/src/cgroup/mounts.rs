//! Finding the cgroup hierarchies from `/proc/self/mountinfo`: the cgroup v2 mount and the v1
//! mounts of the controllers sandtrail uses.

use std::path::{Path, PathBuf};

/// The v1 controllers sandtrail uses when the v2 hierarchy does not offer them.
pub const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// The cgroup mounts found in a mountinfo file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mounts {
    /// Mount point of the (first) cgroup2 mount.
    pub v2: Option<PathBuf>,
    /// `(controller, mount point)` of each v1 controller in [`V1_CONTROLLERS`] that is mounted
    /// (first mount of each; `cpu` and `cpuacct` share a path when co-mounted).
    pub v1: Vec<(&'static str, PathBuf)>,
}

impl Mounts {
    /// The v1 mount point of `controller`, if mounted.
    pub fn v1(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, p)| p.as_path())
    }
}

/// Parses the contents of `/proc/self/mountinfo` (see proc(5)):
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`.
pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (Some(fstype), Some(_source), Some(options)) =
            (right.next(), right.next(), right.next())
        else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mount_point));
        match fstype {
            "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(mount_point),
            "cgroup" => {
                for opt in options.split(',') {
                    if let Some(c) = V1_CONTROLLERS.iter().find(|c| **c == opt) {
                        if mounts.v1(c).is_none() {
                            mounts.v1.push((c, mount_point.clone()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    mounts
}

fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&crate::mountinfo::unescape(s)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid() {
        // This development machine's mountinfo (kernel 6.18), trimmed to the cgroup lines.
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(m.v1("memory"), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(m.v1("cpu"), Some(Path::new("/sys/fs/cgroup/cpu")));
        assert_eq!(m.v1("cpuacct"), Some(Path::new("/sys/fs/cgroup/cpuacct")));
        assert_eq!(m.v1("pids"), Some(Path::new("/sys/fs/cgroup/pids")));
        assert_eq!(m.v1("freezer"), Some(Path::new("/sys/fs/cgroup/freezer")));
        assert_eq!(m.v1.len(), 5);
    }

    #[test]
    fn pure_v2_and_comounted_v1() {
        let text = "\
25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let m = parse_mountinfo(text);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(m.v1.is_empty());

        let text = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
";
        let m = parse_mountinfo(text);
        assert_eq!(m.v2, None);
        assert_eq!(m.v1("cpu"), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(
            m.v1("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }
}
