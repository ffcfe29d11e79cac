use clap::Parser;

// The run-completion path allocates per event from many threads; glibc's allocator spends much
// of that time on arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kfp_operator::cli::Args::parse().run().await
}
