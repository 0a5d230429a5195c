//! SAM4EM in burn: SAM 2's Hiera encoder with SAM4EM's LoRA, the FPN fusion head, the slice
//! memory, prompt encoders and the two-stage mask decoder; checkpoint loading; loss and
//! metrics. One code path for every burn device (CPU "Flex", wgpu).
//!
//! Depends on burn and on `io::atomic` for writing files; knows nothing of the UI, the stack
//! or the mask store. `config`, `metrics`, `preprocess` and `pe` are plain host code.
//!
//! The file formats (`config`: configurations, `weights`: `.pt` and safetensors checkpoints,
//! `adapter`: adapter-set files and their metadata) build without burn, with the `model`
//! feature off, so that every parser can be fuzzed without compiling the model (`.fuzz/`).

pub mod adapter;
#[cfg(feature = "model")]
pub mod backprop;
#[cfg(feature = "model")]
pub mod checkpoints;
pub mod config;
#[cfg(feature = "model")]
pub mod cpu_conv;
#[cfg(feature = "model")]
pub mod cpu_kernels;
#[cfg(feature = "model")]
pub mod decoder;
#[cfg(feature = "model")]
pub mod device;
#[cfg(feature = "model")]
pub mod footprint;
#[cfg(feature = "model")]
pub mod fusion;
#[cfg(feature = "model")]
pub mod hiera;
#[cfg(feature = "model")]
pub mod host_memory;
#[cfg(feature = "model")]
pub mod loss;
#[cfg(feature = "model")]
pub mod memory;
#[cfg(feature = "model")]
pub mod metrics;
#[cfg(feature = "model")]
pub mod multi;
#[cfg(feature = "model")]
pub mod nn;
#[cfg(feature = "model")]
pub mod ops;
#[cfg(feature = "model")]
pub mod optim;
#[cfg(feature = "model")]
pub mod pe;
#[cfg(feature = "model")]
pub mod preprocess;
#[cfg(feature = "model")]
pub mod prompt;
#[cfg(feature = "model")]
pub mod sam4em;
#[cfg(feature = "model")]
pub mod source;
pub mod weights;

pub use config::{HieraSize, Sam4emConfig};
#[cfg(feature = "model")]
pub use multi::HeadIndex;
#[cfg(feature = "model")]
pub use nn::Init;
#[cfg(feature = "model")]
pub use sam4em::{Direction, Sam2Mapping, Sam4em, SliceOutput, StreamMode, StreamState};
pub use weights::{HostTensor, StateDict, WeightsError};
