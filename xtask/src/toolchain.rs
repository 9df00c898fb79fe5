//! Finding or installing a compiler that builds full-`std` Rust for wasm32-unknown-unknown.
//!
//! Two routes work. Plugin authors usually have rustup's prebuilt target
//! (`rustup target add wasm32-unknown-unknown`); when it is installed we use it. Otherwise we use
//! Debian's `rustc-web` with the std sources of `rust-web-src`, building std with
//! `-Zbuild-std` and linking with `lld-22` — everything from the Debian archive, so it works
//! where rustup cannot download targets. `TESSERA_WASM_TOOLCHAIN=rustup|debian` forces a route.

use anyhow::{Context, Result, bail};
use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_PACKAGES: [&str; 4] = ["rustc-web", "cargo-web", "rust-web-src", "lld-22"];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTDOC: &str = "/usr/bin/rustdoc";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const DEBIAN_LLD: &str = "/usr/bin/rust-lld";

/// Environment that must not leak from the outer (host) cargo into a plugin build.
const SCRUBBED_ENV: [&str; 8] = [
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTDOCFLAGS",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's toolchain with its prebuilt wasm32 std.
    Rustup,
    /// Debian's rustc-web with std built from source.
    Debian,
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Toolchain::Rustup => write!(f, "rustup ({WASM_TARGET} target)"),
            Toolchain::Debian => write!(f, "Debian rustc-web (std built from rust-web-src)"),
        }
    }
}

impl Toolchain {
    /// Picks a working route, installing Debian's packages if neither is ready.
    pub fn ensure() -> Result<Self> {
        match std::env::var("TESSERA_WASM_TOOLCHAIN").ok().as_deref() {
            Some("rustup") => {
                if !rustup_has_target() {
                    add_rustup_target()?;
                }
                return Ok(Toolchain::Rustup);
            }
            Some("debian") => {
                if !debian_ready() {
                    install_debian()?;
                }
                return Ok(Toolchain::Debian);
            }
            Some(other) => bail!("TESSERA_WASM_TOOLCHAIN={other:?}: expected `rustup` or `debian`"),
            None => {}
        }
        if rustup_has_target() {
            return Ok(Toolchain::Rustup);
        }
        if debian_ready() {
            return Ok(Toolchain::Debian);
        }
        if Path::new("/usr/bin/apt-get").exists() {
            install_debian()?;
            return Ok(Toolchain::Debian);
        }
        add_rustup_target().context(
            "no wasm32 toolchain: install rustup's target (`rustup target add wasm32-unknown-unknown`) \
             or, on Debian 12, `apt-get install rustc-web cargo-web rust-web-src lld-22`",
        )?;
        Ok(Toolchain::Rustup)
    }

    /// `cargo build --release` of a plugin workspace for wasm32.
    pub fn cargo_build(&self, workspace: &Path, target_dir: &Path) -> Command {
        let mut cmd = self.cargo(workspace);
        cmd.args(["build", "--release", "--target", WASM_TARGET])
            .env("CARGO_TARGET_DIR", target_dir);
        if *self == Toolchain::Debian {
            cmd.arg("-Zbuild-std=std,panic_abort");
        }
        cmd
    }

    /// `cargo test` of a plugin workspace on the host target.
    pub fn cargo_native_test(&self, workspace: &Path, target_dir: &Path) -> Command {
        let mut cmd = self.cargo(workspace);
        cmd.args(["test", "--workspace", "--target", host_triple()])
            .env("CARGO_TARGET_DIR", target_dir);
        cmd
    }

    fn cargo(&self, workspace: &Path) -> Command {
        let mut cmd;
        match self {
            Toolchain::Rustup => {
                cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
                for var in SCRUBBED_ENV {
                    cmd.env_remove(var);
                }
            }
            Toolchain::Debian => {
                cmd = Command::new(DEBIAN_CARGO);
                for var in SCRUBBED_ENV {
                    cmd.env_remove(var);
                }
                // Pinned here, not exported: a global RUSTC would also switch the host build.
                cmd.env("RUSTC", DEBIAN_RUSTC)
                    .env("RUSTDOC", DEBIAN_RUSTDOC)
                    .env("RUSTC_BOOTSTRAP", "1");
            }
        }
        cmd.current_dir(workspace);
        cmd
    }
}

fn host_triple() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

fn quiet(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rustup_has_target() -> bool {
    quiet(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|list| list.lines().any(|l| l.trim() == WASM_TARGET))
}

fn add_rustup_target() -> Result<()> {
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed ({status})");
    }
    Ok(())
}

fn debian_ready() -> bool {
    let lld_ok = std::fs::canonicalize(DEBIAN_LLD).is_ok();
    let rustc_ok = quiet(Command::new(DEBIAN_RUSTC).arg("--version")).is_some();
    lld_ok && rustc_ok && Path::new(DEBIAN_STD_SRC).is_dir() && Path::new(DEBIAN_CARGO).exists()
}

fn install_debian() -> Result<()> {
    println!(
        "xtask: installing Debian's wasm toolchain: {}",
        DEBIAN_PACKAGES.join(" ")
    );
    apt_install(
        &DEBIAN_PACKAGES,
        "install them by hand, or install rustup's wasm32-unknown-unknown target",
    )?;
    if !debian_ready() {
        bail!(
            "installed {} but {DEBIAN_RUSTC}, {DEBIAN_STD_SRC} or {DEBIAN_LLD} is still missing",
            DEBIAN_PACKAGES.join(" ")
        );
    }
    Ok(())
}

/// Installs Debian packages with apt-get (directly as root, else through passwordless sudo),
/// refreshing the package lists once if the first attempt fails; `otherwise` tells the user what
/// to do when it cannot.
pub fn apt_install(packages: &[&str], otherwise: &str) -> Result<()> {
    let is_root = quiet(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0");
    let apt = |args: &[&str]| -> Result<bool> {
        let mut cmd = if is_root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        Ok(cmd.status().context("running apt-get")?.success())
    };
    let install: Vec<&str> = ["install", "-y", "-q"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    if !apt(&install)? {
        // A fresh machine may have no package lists yet.
        if !apt(&["update", "-q"])? || !apt(&install)? {
            bail!(
                "could not install {} with apt-get{}; {otherwise}",
                packages.join(" "),
                if is_root {
                    ""
                } else {
                    " (needs root or passwordless sudo)"
                }
            );
        }
    }
    Ok(())
}
