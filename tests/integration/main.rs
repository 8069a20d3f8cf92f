//! Integration tests: the pgup binary against real containers built by images/build.sh.
//! They need Docker and the images; without them they fail, they never skip.

mod collation;
mod common;
mod compose;
mod exit;
mod extensions;
mod fleet;
mod hooks;
mod image;
mod in_container;
mod layouts;
mod options;
mod recovery;
mod removals;
mod status;
mod upgrade;
