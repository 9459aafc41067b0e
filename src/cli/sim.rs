//! `paygate sim`: a provider simulator alone.

use std::net::SocketAddr;
use std::path::PathBuf;

use paygate::dev;
use paygate::telemetry::{self, LogFormat};

use super::process::{Failure, shutdown_signal};

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    pub(super) log_format: super::args::LogFormatArg,
    /// Which provider to simulate.
    #[arg(long, default_value = "antom", value_parser = ["antom", "payxpert"])]
    provider: String,
    /// PayXpert: the originator password the simulator accepts.
    #[arg(
        long,
        env = "PAYGATE_SIM_PAYXPERT_PASSWORD",
        default_value = "dev-password"
    )]
    password: String,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Antom: where to send notifications, e.g. `http://127.0.0.1:8081/notify/antom`
    /// (`/refund`, `/subscription`, `/payment` are appended), with Antom's resends.
    #[arg(long)]
    notify_url: Option<String>,
    /// Directory with (or for) the merchant and Antom key pairs.
    #[arg(long, default_value = "./data/sim-keys")]
    keys_dir: PathBuf,
    /// The merchant client id the simulator accepts.
    #[arg(long, default_value = dev::DEV_CLIENT_ID)]
    client_id: String,
}

pub(super) async fn run(args: Args, format: Option<LogFormat>) -> Result<(), Failure> {
    let _telemetry = telemetry::init(format.unwrap_or(LogFormat::Text));
    match args.provider.as_str() {
        "payxpert" => payxpert(args).await,
        "antom" => antom(args).await,
        _ => Err(Failure::Usage(
            "sim: --provider must be antom or payxpert".into(),
        )),
    }
}

fn cannot_listen(listen: SocketAddr, e: impl std::fmt::Display) -> Failure {
    Failure::Failed(format!("sim: cannot listen on {listen}: {e}"))
}

async fn payxpert(args: Args) -> Result<(), Failure> {
    let Args {
        password, listen, ..
    } = args;
    let sim = paygate::sim::payxpert::PayXpertSim::new(dev::DEV_ORIGINATOR, password.clone());
    sim.seed_demo();
    let sim = sim
        .bind(listen)
        .await
        .map_err(|e| cannot_listen(listen, e))?;
    println!(
        "PayXpert simulator on {url} (originator {o}, password {pw:?})\nPoint a gateway at it with:\n  echo {pw:?} > px-password\n  PAYGATE_PAYXPERT_BASE_URL={url} PAYGATE_PAYXPERT_ORIGINATOR_ID={o} \\\n  PAYGATE_PAYXPERT_PASSWORD_FILE=px-password paygate serve",
        url = sim.base_url(),
        o = dev::DEV_ORIGINATOR,
        pw = password,
    );
    shutdown_signal().await;
    sim.stop().await;
    Ok(())
}

async fn antom(args: Args) -> Result<(), Failure> {
    let Args {
        listen,
        keys_dir,
        client_id,
        notify_url,
        ..
    } = args;
    let files = dev::load_or_create_keys(&keys_dir)
        .map_err(|e| Failure::Failed(format!("sim: keys in {}: {e}", keys_dir.display())))?;
    let sim = dev::start_sim(&files, &client_id, listen)
        .await
        .map_err(|e| cannot_listen(listen, e))?;
    if let Some(base_url) = notify_url {
        sim.sim.notify_to(paygate::sim::antom::NotifyTarget {
            base_url,
            resend: paygate::sim::antom::ANTOM_RESEND_SCHEDULE.to_vec(),
            auto_settle: Some(dev::DEV_SETTLE_AFTER),
        });
    }
    println!(
        "Antom simulator on {url} (client id {client_id})\nPoint a gateway at it with:\n  PAYGATE_ANTOM_BASE_URL={url} PAYGATE_ANTOM_CLIENT_ID={client_id} \\\n  PAYGATE_ANTOM_PRIVATE_KEY_FILE={mk} PAYGATE_ANTOM_PUBLIC_KEY_FILE={ak} paygate serve",
        url = sim.base_url(),
        mk = files.merchant_private.display(),
        ak = files.antom_public.display(),
    );
    shutdown_signal().await;
    sim.stop().await;
    Ok(())
}
