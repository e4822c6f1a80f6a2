//! The gRPC face of a [`Driver`]: turns protocol messages into trait calls
//! and results (and errors) back into messages.

use std::sync::Arc;

use machine_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status as GrpcStatus};
use tracing::Instrument;

use crate::driver::{Capability, CreateRequest, Driver, DriverInfo, Machine, Progress, State};
use crate::error::Error;
use crate::flags::FlagValues;

/// Adapts a [`Driver`] to the generated service trait.
pub(crate) struct Service<D> {
    driver: Arc<D>,
    info: DriverInfo,
    protocol_version: u32,
}

impl<D: Driver> Service<D> {
    pub(crate) fn new(driver: Arc<D>, protocol_version: u32) -> Self {
        let info = driver.info();
        Self {
            driver,
            info,
            protocol_version,
        }
    }

    /// Start, stop, restart and kill: refused unless announced.
    async fn lifecycle(
        &self,
        cap: Capability,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::OperationResponse>, GrpcStatus> {
        let operation = match cap {
            Capability::Start => "start",
            Capability::Stop => "stop",
            Capability::Restart => "restart",
            Capability::Kill => "kill",
        };
        if !self.info.capabilities.contains(&cap) {
            return Err(Error::unsupported(operation).into());
        }
        let m = machine_from(request.into_inner().machine)?;
        let d = &self.driver;
        let result = async {
            match cap {
                Capability::Start => d.start(&m).await,
                Capability::Stop => d.stop(&m).await,
                Capability::Restart => d.restart(&m).await,
                Capability::Kill => d.kill(&m).await,
            }
        }
        .instrument(span(operation, &m.name))
        .await;
        Ok(Response::new(v1::OperationResponse {
            config_json: result?.map(|c| c.0),
        }))
    }
}

pub(crate) fn machine_from(m: Option<v1::Machine>) -> Result<Machine, GrpcStatus> {
    let m = m.ok_or_else(|| GrpcStatus::invalid_argument("request has no machine"))?;
    if m.name.is_empty() {
        return Err(GrpcStatus::invalid_argument(
            "request has an empty machine name",
        ));
    }
    Ok(Machine {
        name: m.name,
        dir: m.dir.into(),
        config_json: m.config_json,
    })
}

fn create_from(req: v1::CreateRequest) -> Result<CreateRequest, GrpcStatus> {
    Ok(CreateRequest {
        machine: machine_from(req.machine)?,
        flags: FlagValues::from_proto(req.flags),
        ssh_public_key: req.ssh_public_key,
        ssh_private_key_path: req.ssh_private_key_path.into(),
    })
}

fn capability_to_proto(c: Capability) -> v1::Capability {
    match c {
        Capability::Start => v1::Capability::Start,
        Capability::Stop => v1::Capability::Stop,
        Capability::Restart => v1::Capability::Restart,
        Capability::Kill => v1::Capability::Kill,
    }
}

pub(crate) fn state_to_proto(s: State) -> v1::State {
    match s {
        State::Running => v1::State::Running,
        State::Stopped => v1::State::Stopped,
        State::Starting => v1::State::Starting,
        State::Stopping => v1::State::Stopping,
        State::Paused => v1::State::Paused,
        State::Saved => v1::State::Saved,
        State::Error => v1::State::Error,
        State::NotFound => v1::State::NotFound,
    }
}

fn span(rpc: &'static str, machine: &str) -> tracing::Span {
    tracing::debug_span!("rpc", rpc, machine = machine)
}

#[tonic::async_trait]
impl<D: Driver> v1::driver_server::Driver for Service<D> {
    async fn get_info(
        &self,
        _request: Request<v1::GetInfoRequest>,
    ) -> Result<Response<v1::GetInfoResponse>, GrpcStatus> {
        let info = &self.info;
        Ok(Response::new(v1::GetInfoResponse {
            name: info.name.clone(),
            version: info.version.clone(),
            description: info.description.clone(),
            sdk_name: crate::SDK_NAME.to_owned(),
            sdk_version: crate::SDK_VERSION.to_owned(),
            protocol_version: self.protocol_version,
            capabilities: info
                .capabilities
                .iter()
                .map(|c| capability_to_proto(*c) as i32)
                .collect(),
        }))
    }

    async fn get_create_flags(
        &self,
        _request: Request<v1::GetCreateFlagsRequest>,
    ) -> Result<Response<v1::GetCreateFlagsResponse>, GrpcStatus> {
        Ok(Response::new(v1::GetCreateFlagsResponse {
            flags: self
                .driver
                .create_flags()
                .await?
                .iter()
                .map(|f| f.to_proto())
                .collect(),
        }))
    }

    async fn pre_create_check(
        &self,
        request: Request<v1::CreateRequest>,
    ) -> Result<Response<v1::PreCreateCheckResponse>, GrpcStatus> {
        let req = create_from(request.into_inner())?;
        let sp = span("PreCreateCheck", &req.machine.name);
        let warnings = self.driver.pre_create_check(&req).instrument(sp).await?;
        Ok(Response::new(v1::PreCreateCheckResponse { warnings }))
    }

    type CreateStream = ReceiverStream<Result<v1::CreateEvent, GrpcStatus>>;

    async fn create(
        &self,
        request: Request<v1::CreateRequest>,
    ) -> Result<Response<Self::CreateStream>, GrpcStatus> {
        let req = create_from(request.into_inner())?;
        let (events_tx, events_rx) = mpsc::channel(16);
        let (progress_tx, mut progress_rx) = mpsc::channel::<(String, f64)>(16);
        let driver = self.driver.clone();
        let sp = span("Create", &req.machine.name);
        tokio::spawn(
            async move {
                let forward_tx = events_tx.clone();
                let forward = tokio::spawn(async move {
                    while let Some((message, fraction)) = progress_rx.recv().await {
                        let event = v1::CreateEvent {
                            event: Some(v1::create_event::Event::Progress(v1::Progress {
                                message,
                                fraction,
                            })),
                        };
                        if forward_tx.send(Ok(event)).await.is_err() {
                            break;
                        }
                    }
                });
                let result = driver.create(req, Progress::new(progress_tx)).await;
                // Every progress event goes out before the result.
                let _ = forward.await;
                let last = result
                    .map_err(GrpcStatus::from)
                    .map(|config| v1::CreateEvent {
                        event: Some(v1::create_event::Event::Result(v1::CreateResult {
                            config_json: config.0,
                        })),
                    });
                let _ = events_tx.send(last).await;
            }
            .in_current_span()
            .instrument(sp),
        );
        Ok(Response::new(ReceiverStream::new(events_rx)))
    }

    async fn remove(
        &self,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::RemoveResponse>, GrpcStatus> {
        let m = machine_from(request.into_inner().machine)?;
        let sp = span("Remove", &m.name);
        self.driver.remove(&m).instrument(sp).await?;
        Ok(Response::new(v1::RemoveResponse {}))
    }

    async fn start(
        &self,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::OperationResponse>, GrpcStatus> {
        self.lifecycle(Capability::Start, request).await
    }

    async fn stop(
        &self,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::OperationResponse>, GrpcStatus> {
        self.lifecycle(Capability::Stop, request).await
    }

    async fn restart(
        &self,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::OperationResponse>, GrpcStatus> {
        self.lifecycle(Capability::Restart, request).await
    }

    async fn kill(
        &self,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::OperationResponse>, GrpcStatus> {
        self.lifecycle(Capability::Kill, request).await
    }

    async fn get_state(
        &self,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::GetStateResponse>, GrpcStatus> {
        let m = machine_from(request.into_inner().machine)?;
        let sp = span("GetState", &m.name);
        let status = self.driver.state(&m).instrument(sp).await?;
        Ok(Response::new(v1::GetStateResponse {
            state: state_to_proto(status.state) as i32,
            detail: status.detail,
        }))
    }

    async fn get_connection(
        &self,
        request: Request<v1::MachineRequest>,
    ) -> Result<Response<v1::GetConnectionResponse>, GrpcStatus> {
        let m = machine_from(request.into_inner().machine)?;
        let sp = span("GetConnection", &m.name);
        let c = self.driver.connection(&m).instrument(sp).await?;
        Ok(Response::new(v1::GetConnectionResponse {
            ip: c.ip,
            ssh_host: c.ssh_host,
            ssh_port: u32::from(c.ssh_port),
            ssh_user: c.ssh_user,
            ssh_key_path: c
                .ssh_key_path
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            docker_url: c.docker_url,
        }))
    }
}
