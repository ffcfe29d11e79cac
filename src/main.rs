use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kfp_operator::cli::Args::parse().run().await
}
