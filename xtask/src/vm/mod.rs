//! `cargo xtask vm-test`: Debian's stock kernel under qemu, running the race
//! scenarios with the test module.

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args, Default)]
pub struct VmTestArgs {}

pub fn run(_args: VmTestArgs) -> Result<()> {
    bail!("the VM bench is not built yet")
}
