//! Stacks, masks and projects on disk, the editor, and the `sam4em` binary as a user runs it.
//! One test binary (CI links the crate once for all of them): each file is a module named as
//! the test file it was.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod editing;
mod masks_export;
mod session;
mod shared_data;
mod stack_formats;
