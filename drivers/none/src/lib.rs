//! The `none` driver: a machine that is only a Docker endpoint someone else
//! runs, given by `--url`, as in Docker Machine. Nothing is created or
//! removed at the provider and there is no SSH, so nothing is provisioned.

use machine_driver_sdk::{
    Config, Connection, CreateRequest, Driver, DriverInfo, Error, Flag, Machine, Progress, Result,
    State, Status, async_trait,
};
use serde::{Deserialize, Serialize};

/// The driver.
#[derive(Debug, Default)]
pub struct NoneDriver;

#[derive(Debug, Serialize, Deserialize)]
struct NoneConfig {
    url: String,
}

/// Checks a Docker endpoint URL and returns the host part of a tcp URL.
fn endpoint_host(url: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::invalid_argument(format!("--url {url:?} is not a Docker endpoint: {why}")).with_hint(
            "use tcp://HOST:PORT (e.g. tcp://192.168.99.100:2376) or unix:///path/to/docker.sock",
        )
    };
    if let Some(path) = url.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(bad("a unix socket needs an absolute path"));
        }
        return Ok("localhost".into());
    }
    let rest = url
        .strip_prefix("tcp://")
        .ok_or_else(|| bad("it must start with tcp:// or unix://"))?;
    let hostport = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6
            .split_once("]:")
            .ok_or_else(|| bad("expected [IPv6]:PORT"))?;
        (h, p)
    } else {
        hostport
            .rsplit_once(':')
            .ok_or_else(|| bad("it has no port"))?
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad("it has no host"));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
    Ok(host.to_owned())
}

#[async_trait]
impl Driver for NoneDriver {
    fn info(&self) -> DriverInfo {
        DriverInfo {
            name: "none".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "an existing Docker endpoint given by --url".into(),
            capabilities: vec![],
        }
    }

    async fn create_flags(&self) -> Result<Vec<Flag>> {
        // `--url` without a driver prefix, as Docker Machine users know it.
        Ok(vec![
            Flag::string(
                "url",
                "URL of the Docker endpoint, e.g. tcp://192.168.99.100:2376",
            )
            .env("NONE_URL")
            .required(),
        ])
    }

    async fn pre_create_check(&self, req: &CreateRequest) -> Result<Vec<String>> {
        let url = req
            .flags
            .string("url")?
            .ok_or_else(|| Error::invalid_argument("the none driver needs --url"))?;
        endpoint_host(&url)?;
        Ok(Vec::new())
    }

    async fn create(&self, req: CreateRequest, _progress: Progress) -> Result<Config> {
        let url = req
            .flags
            .string("url")?
            .ok_or_else(|| Error::invalid_argument("the none driver needs --url"))?;
        endpoint_host(&url)?;
        Config::of(&NoneConfig { url })
    }

    async fn remove(&self, _machine: &Machine) -> Result<()> {
        // The endpoint belongs to someone else; forgetting it is all there is.
        Ok(())
    }

    async fn state(&self, m: &Machine) -> Result<Status> {
        if m.config_json.is_empty() {
            return Ok(State::NotFound.into());
        }
        // As in Docker Machine: the endpoint is assumed up; `ls` shows
        // whether Docker answers.
        Ok(State::Running.into())
    }

    async fn connection(&self, m: &Machine) -> Result<Connection> {
        let cfg: NoneConfig = m.config()?;
        Ok(Connection {
            ip: endpoint_host(&cfg.url)?,
            docker_url: cfg.url,
            ..Connection::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_docker_endpoints() {
        assert_eq!(endpoint_host("tcp://10.0.0.5:2376").unwrap(), "10.0.0.5");
        assert_eq!(endpoint_host("tcp://[::1]:2375/").unwrap(), "::1");
        assert_eq!(
            endpoint_host("tcp://docker.example:2376").unwrap(),
            "docker.example"
        );
        assert_eq!(
            endpoint_host("unix:///var/run/docker.sock").unwrap(),
            "localhost"
        );
    }

    #[test]
    fn refuses_other_text_with_a_hint() {
        for bad in [
            "10.0.0.5:2376",
            "tcp://host",
            "tcp://:2376",
            "tcp://h:99999",
            "unix://rel",
        ] {
            let e = endpoint_host(bad).unwrap_err();
            assert_eq!(
                e.kind,
                machine_driver_sdk::ErrorKind::InvalidArgument,
                "{bad}"
            );
            assert!(e.hint.is_some());
        }
    }
}
