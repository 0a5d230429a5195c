//! SAM4EM in burn: SAM 2's Hiera encoder with SAM4EM's LoRA, the FPN fusion head, the slice
//! memory, prompt encoders and the two-stage mask decoder; checkpoint loading; loss and
//! metrics. One code path for every burn device (CPU "Flex", wgpu).
//!
//! Depends on burn and on `io::atomic` for writing files; knows nothing of the UI, the stack
//! or the mask store. `config`, `metrics`, `preprocess` and `pe` are plain host code.

pub mod adapter;
pub mod backprop;
pub mod checkpoints;
pub mod config;
pub mod cpu_conv;
pub mod cpu_kernels;
pub mod decoder;
pub mod device;
pub mod footprint;
pub mod fusion;
pub mod hiera;
pub mod host_memory;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod multi;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pe;
pub mod preprocess;
pub mod prompt;
pub mod sam4em;
pub mod source;
pub mod weights;

pub use config::{HieraSize, Sam4emConfig};
pub use multi::HeadIndex;
pub use nn::Init;
pub use sam4em::{Direction, Sam2Mapping, Sam4em, SliceOutput, StreamMode, StreamState};
pub use weights::{HostTensor, StateDict, WeightsError};
