//! The [`CgroupDriver`] for both host layouts: pure v2, and hybrid (v1 controllers plus a v2
//! hierarchy used for ids and, where the kernel has it, freezing). One driver covers both because
//! the choice is made per controller: from v2 when the session's v2 directory has it, else from
//! its v1 hierarchy.

use std::path::{Path, PathBuf};

use super::mounts::{self, Mounts, V1_CONTROLLERS};
use super::session::{self, Session};
use super::{files, v2, validate_name, CgroupDriver, CgroupError, SessionCgroup, SANDTRAIL_DIR};
use crate::Limits;

/// v2 controllers sandtrail enables for its cgroups when the host offers them.
const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The cgroup hierarchies of this host. See the module docs.
#[derive(Clone, Debug)]
pub struct Driver {
    mounts: Mounts,
    /// Controllers in the v2 root's `cgroup.controllers` (not bound to a v1 hierarchy).
    v2_controllers: Vec<String>,
}

impl Driver {
    /// Reads `/proc/self/mountinfo` and the v2 root's `cgroup.controllers`.
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = files::read(path)?;
        Self::from_mounts(mounts::parse_mountinfo(&text))
    }

    /// The driver for the given mounts (fails without a v2 mount).
    pub fn from_mounts(mounts: Mounts) -> Result<Self, CgroupError> {
        let v2 = mounts.v2.as_ref().ok_or(CgroupError::NoV2)?;
        let text = files::read(&v2.join("cgroup.controllers"))?;
        let v2_controllers = text.split_whitespace().map(str::to_string).collect();
        Ok(Driver {
            mounts,
            v2_controllers,
        })
    }

    /// The v2 mount point.
    pub fn v2_root(&self) -> &Path {
        self.mounts.v2.as_deref().expect("checked in from_mounts")
    }

    /// `<v2 root>/sandtrail`.
    fn v2_base(&self) -> PathBuf {
        self.v2_root().join(SANDTRAIL_DIR)
    }

    /// v1 hierarchies in use: the controllers the v2 root does not offer (`cpuacct` with `cpu`,
    /// `freezer` whenever mounted, as a fallback for kernels without `cgroup.freeze`).
    fn v1_in_use(&self) -> Vec<&'static str> {
        let v2_has = |c: &str| self.v2_controllers.iter().any(|x| x == c);
        V1_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| self.mounts.v1(c).is_some())
            .filter(|c| match *c {
                "cpuacct" => !v2_has("cpu"),
                "freezer" => true,
                c => !v2_has(c),
            })
            .collect()
    }

    /// Builds the session handle for `name` (no file system access beyond probing the v2
    /// directory for controller files).
    fn session(&self, name: &str) -> Session {
        Session::resolve(
            self.v2_base().join(name),
            name,
            &self.mounts,
            &self.v1_in_use(),
        )
    }

    /// How to make `controller` available on this host, for error messages.
    fn fix_for(&self, controller: &str) -> String {
        let v2 = self.v2_root().display();
        if self.v2_controllers.iter().any(|c| c == controller) {
            format!(
                "enable it for sandtrail's cgroups: `echo +{controller} > {v2}/cgroup.subtree_control` \
                 (sandtrail does not change cgroups it did not create)"
            )
        } else {
            format!(
                "mount its v1 hierarchy (`mkdir -p /sys/fs/cgroup/{controller} && mount -t cgroup -o \
                 {controller} cgroup /sys/fs/cgroup/{controller}`) or enable it in the v2 hierarchy at \
                 {v2} (cgroup.subtree_control); check /proc/cgroups and the kernel command line \
                 (cgroup_disable=)"
            )
        }
    }
}

impl CgroupDriver for Driver {
    fn describe(&self) -> String {
        let v1 = self.v1_in_use();
        let v2_used: Vec<&str> = V2_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| self.v2_controllers.iter().any(|x| x == c))
            .collect();
        let freeze = if v2_has_freeze(&self.v2_base()) {
            "freeze"
        } else {
            "no freeze"
        };
        let mut what = vec!["ids", freeze];
        what.extend(v2_used);
        let v2 = format!("v2 at {} ({})", self.v2_root().display(), what.join(", "));
        if v1.is_empty() {
            v2
        } else {
            format!("hybrid: {v2}, v1 {}", v1.join(","))
        }
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<Box<dyn SessionCgroup>, CgroupError> {
        validate_name(name)?;
        let plan = session::Plan::new(limits)?;
        let base = self.v2_base();
        files::mkdir(&base)?;
        v2::enable_controllers(&base, &V2_CONTROLLERS)?;
        let dir = base.join(name);
        if !files::mkdir(&dir)? {
            return Err(CgroupError::Exists {
                name: name.to_string(),
                path: dir,
            });
        }
        // From here on, undo everything on failure.
        let mut created = vec![dir];
        let result = (|| {
            let s = self.session(name);
            for d in s.v1_dirs() {
                files::mkdir(d.parent().expect("v1 dir has a parent"))?;
                if !files::mkdir(d)? {
                    return Err(CgroupError::Exists {
                        name: name.to_string(),
                        path: d.to_path_buf(),
                    });
                }
                created.push(d.to_path_buf());
            }
            s.apply(&plan, |c, needed| CgroupError::ControllerMissing {
                controller: c,
                needed,
                fix: self.fix_for(c),
            })?;
            Ok(s)
        })();
        match result {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => {
                for d in created.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
                Err(e)
            }
        }
    }

    fn open(&self, name: &str) -> Result<Box<dyn SessionCgroup>, CgroupError> {
        validate_name(name)?;
        let dir = self.v2_base().join(name);
        if !dir.is_dir() {
            return Err(CgroupError::NotFound {
                name: name.to_string(),
                path: dir,
            });
        }
        let s = self.session(name);
        if let Some(d) = s.v1_dirs().iter().find(|d| !d.is_dir()) {
            return Err(CgroupError::NotFound {
                name: name.to_string(),
                path: d.to_path_buf(),
            });
        }
        Ok(Box::new(s))
    }

    fn attach(&self, path: &Path) -> Result<Box<dyn SessionCgroup>, CgroupError> {
        let bad = |why: String| CgroupError::NotAttachable {
            path: path.to_path_buf(),
            why,
        };
        let root = self.v2_root();
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            root.join(path)
        };
        if full
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad("the path may not contain `..`".into()));
        }
        let rel = full.strip_prefix(root).map_err(|_| {
            bad(format!(
                "it is not in the cgroup v2 hierarchy at {}; give a directory below it (or a path relative to it)",
                root.display()
            ))
        })?;
        if rel.as_os_str().is_empty() {
            return Err(bad(
                "that is the root of the hierarchy (every process of the host); give the sandbox's own cgroup".into(),
            ));
        }
        if rel.starts_with(SANDTRAIL_DIR) {
            return Err(bad(format!(
                "{}/{SANDTRAIL_DIR} holds sandtrail's own session cgroups; attach to the provider's cgroup instead",
                root.display()
            )));
        }
        if !full.join("cgroup.procs").is_file() {
            return Err(bad(
                "no such cgroup v2 directory (it has no cgroup.procs); create it first, or check the path".into(),
            ));
        }
        Ok(Box::new(Session::resolve_foreign(
            full.clone(),
            rel,
            &self.mounts,
            &self.v1_in_use(),
        )))
    }

    fn sweep(&self, keep: &dyn Fn(&str) -> bool) -> Result<Vec<String>, CgroupError> {
        let mut bases = vec![self.v2_base()];
        bases.extend(
            self.v1_in_use()
                .iter()
                .filter_map(|c| self.mounts.v1(c))
                .map(|m| m.join(SANDTRAIL_DIR)),
        );
        let mut names = Vec::new();
        for base in &bases {
            let entries = match std::fs::read_dir(base) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CgroupError::io("list", base, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| CgroupError::io("list", base, e))?;
                if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                if let Some(n) = entry.file_name().to_str() {
                    if validate_name(n).is_ok() && !names.iter().any(|x| x == n) {
                        names.push(n.to_string());
                    }
                }
            }
        }
        names.sort();
        let mut removed = Vec::new();
        let mut first_err = None;
        for name in names.into_iter().filter(|n| !keep(n)) {
            let s = self.session(&name);
            match s.kill_all().and_then(|()| s.remove()) {
                Ok(()) => removed.push(name),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }
}

/// Whether v2 cgroups have `cgroup.freeze`: checked on `sandtrail/` if it exists, else from the
/// kernel version (5.2+).
fn v2_has_freeze(base: &Path) -> bool {
    if base.is_dir() {
        return base.join("cgroup.freeze").exists();
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (5, 2)
}
