//! `attestation`: be your own vendor. Make a root CA, batch attestation certificates and a FIDO
//! metadata statement, and provision keys with a batch.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use attestation::certificate::{self, Subject};
use attestation::files::{
    self, BATCH_CERT, BATCH_KEY, CA_CERT, CA_KEY, ENTERPRISE_CERT, ENTERPRISE_KEY, METADATA,
};
use attestation::provision::{self, Target};
use attestation::{format_aaguid, parse_aaguid, Error};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Attestation CA, batch certificates, metadata and provisioning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a P-256 root CA (self-signed, long-lived) in DIR.
    Ca {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        subject: SubjectArgs,
        /// Years of validity.
        #[arg(long, default_value_t = 30)]
        years: u32,
    },
    /// Make a batch attestation key and certificate for an AAGUID, issued by the CA in --ca.
    Batch {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        #[arg(long, value_name = "UUID")]
        aaguid: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        subject: SubjectArgs,
        #[arg(long, default_value_t = 20)]
        years: u32,
    },
    /// Write the FIDO metadata statement (MDS3) for a batch, with the authenticatorGetInfo the
    /// key returns: from --target, or from a throwaway virtual key provisioned with the batch.
    Metadata {
        #[arg(long, value_name = "DIR")]
        batch: PathBuf,
        /// A key provisioned with this batch (HOST:PORT:BUSID or /dev/hidrawN).
        #[arg(long)]
        target: Option<String>,
        /// Where to write it (default: DIR/metadata.json).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Install the batch on a key that has no attestation yet (HOST:PORT:BUSID or /dev/hidrawN).
    Provision {
        #[arg(long)]
        target: String,
        #[arg(long, value_name = "DIR")]
        batch: PathBuf,
    },
    /// Issue an enterprise attestation certificate for one key (its own key pair, its serial in
    /// the subject, the batch's AAGUID, signed by the CA in --ca), write it to --out, and
    /// install it on --target (which has the batch already) with the RP IDs that
    /// vendor-facilitated enterprise attestation goes to.
    Enterprise {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The batch installed on the key: its AAGUID is the enterprise certificate's.
        #[arg(long, value_name = "DIR")]
        batch: PathBuf,
        /// The key's serial, named in the certificate's subject (serialNumber).
        #[arg(long)]
        serial: String,
        /// An RP ID enterprise attestation is given to when the platform asks for the
        /// vendor-facilitated kind; repeat for each (at most 8, each at most 256 bytes).
        #[arg(long = "rp-id", value_name = "RP_ID")]
        rp_ids: Vec<String>,
        #[arg(long)]
        target: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        years: u32,
    },
}

#[derive(Args)]
struct SubjectArgs {
    /// Organisation (subject O); a batch takes its CA's by default, a CA "Open FIDO Key".
    #[arg(long)]
    organization: Option<String>,
    /// ISO 3166 country code (subject C); a batch takes its CA's by default, a CA "US".
    #[arg(long)]
    country: Option<String>,
    /// Common name (subject CN); by default the organisation and the certificate's role.
    #[arg(long)]
    common_name: Option<String>,
}

impl SubjectArgs {
    /// The subject, filling what was not given from `defaults`; `role` ends the default CN.
    fn subject(&self, defaults: &Subject, role: &str) -> Subject {
        let organization = self
            .organization
            .clone()
            .unwrap_or_else(|| defaults.organization.clone());
        Subject {
            country: self
                .country
                .clone()
                .unwrap_or_else(|| defaults.country.clone()),
            common_name: self
                .common_name
                .clone()
                .unwrap_or_else(|| format!("{organization} {role}")),
            organization,
        }
    }
}

/// The defaults of a root CA's subject.
fn vendor_defaults() -> Subject {
    Subject {
        country: "US".into(),
        organization: "Open FIDO Key".into(),
        common_name: String::new(),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("attestation: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Ca {
            out,
            subject,
            years,
        } => {
            let subject = subject.subject(&vendor_defaults(), "Attestation Root");
            let ca = certificate::root_ca(&subject, years)?;
            files::save(&out, &ca, CA_KEY, CA_CERT)?;
            println!("root CA: {}", out.join(CA_CERT).display());
        }
        Command::Batch {
            ca,
            aaguid,
            out,
            subject,
            years,
        } => {
            let aaguid = parse_aaguid(&aaguid)?;
            let ca = files::load(&ca, CA_KEY, CA_CERT)?;
            let subject = subject.subject(&Subject::of(&ca.certificate), "Batch");
            let batch = certificate::batch(&ca, &subject, aaguid, years)?;
            files::save(&out, &batch, BATCH_KEY, BATCH_CERT)?;
            files::save_certificate(&out.join(CA_CERT), &ca.certificate)?;
            println!(
                "batch for AAGUID {}: {}",
                format_aaguid(&aaguid),
                out.join(BATCH_CERT).display()
            );
        }
        Command::Metadata { batch, target, out } => {
            let out = out.unwrap_or_else(|| batch.join(METADATA));
            let statement = metadata(&batch, target.as_deref())?;
            let text =
                serde_json::to_string_pretty(&statement).map_err(|e| Error::new(e.to_string()))?;
            std::fs::write(&out, text + "\n")?;
            println!("metadata statement: {}", out.display());
        }
        Command::Provision { target, batch } => {
            let target: Target = target.parse()?;
            let issued = files::load(&batch, BATCH_KEY, BATCH_CERT)?;
            provision::provision(&target, &issued)?;
            println!(
                "provisioned {target:?} with {}",
                batch.join(BATCH_CERT).display()
            );
        }
        Command::Enterprise {
            ca,
            batch,
            serial,
            rp_ids,
            target,
            out,
            years,
        } => {
            let target: Target = target.parse()?;
            let ca = files::load(&ca, CA_KEY, CA_CERT)?;
            let batch = files::load_certificate(&batch.join(BATCH_CERT))?;
            let aaguid = certificate::aaguid_of(&batch)
                .ok_or_else(|| Error::new("the batch certificate has no AAGUID"))?;
            let subject = Subject::of(&ca.certificate);
            let subject = Subject {
                common_name: format!("{} Enterprise Attestation", subject.organization),
                ..subject
            };
            let issued = certificate::enterprise(&ca, &subject, &serial, aaguid, years)?;
            files::save(&out, &issued, ENTERPRISE_KEY, ENTERPRISE_CERT)?;
            files::save_certificate(&out.join(CA_CERT), &ca.certificate)?;
            provision::provision_enterprise(&target, &issued, &rp_ids)?;
            println!(
                "provisioned {target:?} with enterprise attestation {} for {} RP IDs",
                out.join(ENTERPRISE_CERT).display(),
                rp_ids.len()
            );
        }
    }
    Ok(())
}

fn metadata(batch_dir: &Path, target: Option<&str>) -> Result<serde_json::Value, Error> {
    let batch = files::load(batch_dir, BATCH_KEY, BATCH_CERT)?;
    let root = files::load_certificate(&batch_dir.join(CA_CERT))?;
    let info = match target {
        Some(target) => provision::get_info(&target.parse()?)?,
        None => {
            // The getInfo of a key running this very core, provisioned with this batch.
            let config = usbip_runner::ServerConfig::new(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                usbip_runner::PresenceMode::Auto,
                usbip_runner::StateLocation::Ephemeral,
            );
            let key = usbip_runner::start(config)?;
            let target = Target::UsbIp {
                addr: key.addr(),
                bus_id: "1-1".into(),
            };
            provision::provision(&target, &batch)?;
            let info = provision::get_info(&target)?;
            key.shutdown();
            info
        }
    };
    attestation::metadata::statement(&batch.certificate, &root, &info)
}
