"""machine-driver-pyhello: a machine driver written in Python with grpcio.

The same provider as the Rust example (examples/machine-driver-hello), to
show that a driver needs no Rust and no SDK: each host is a local process,
a command of yours that runs the host in the foreground (a script that
boots a VM, say). The driver starts it, stops it (SIGTERM, then SIGKILL),
tells whether it runs and says where to reach it; machine does the rest.

Everything the plugin protocol asks for is in this one file, in the order
docs/protocol.md describes it: the cookie check, version negotiation, the
unix socket (or TCP with the token check), the health and controller
services, the one stdout line, JSON log lines on stderr, and shutdown on
request, on stdin's end or on a signal. build.sh generates the gRPC stubs
from machine's .proto files and writes the `machine-driver-pyhello`
launcher that runs this file.
"""

import fcntl
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

NAME = "pyhello"  # the launcher is machine-driver-pyhello
VERSION = "0.1.0"
DESCRIPTION = "hosts that are local processes run by a command of yours (Python)"

# The handshake's constants (proto/src/handshake.rs).
COOKIE_KEY = "MACHINE_DRIVER_PLUGIN"
COOKIE_VALUE = "8c2bd3a1e5f44b0d9a6e7f1c3b5d7e9f"
PROTOCOLS = [1]  # application protocol versions this driver speaks
CORE_PROTOCOL = 1
HEALTH_SERVICE = "plugin"
TOKEN_METADATA = "machine-driver-token"
HINT_METADATA = "machine-hint"

# The host's files in the machine's directory.
RECORD = "pyhello.json"  # the driver's record; its absence means "no such host"
LOCK = "pyhello.lock"  # held (flock) by the host's processes while it runs
PID = "pyhello.pid"  # the host's process group, for signals
LOG = "pyhello.log"  # the command's output
AUTHORIZED_KEYS = "pyhello_authorized_keys"

EARLY_EXIT = 1.0  # seconds a failing command has to show it
KILL_WAIT = 5.0  # seconds a host gets to go after SIGKILL
POLL = 0.05

# The command must not get the handshake's variables: the token is a secret
# of this launch, and with the cookie a driver started by the command would
# take itself for one started by machine.
PLUGIN_VARS = {
    "MACHINE_DRIVER_PLUGIN",
    "PLUGIN_PROTOCOL_VERSIONS",
    "PLUGIN_UNIX_SOCKET_DIR",
    "MACHINE_DRIVER_TRANSPORT",
    "MACHINE_DRIVER_TOKEN",
    "MACHINE_DRIVER_LOG",
}

LEVELS = ["trace", "debug", "info", "warn", "error"]


def _log_threshold():
    """MACHINE_DRIVER_LOG is `debug` under `machine --debug`; info otherwise."""
    wanted = os.environ.get("MACHINE_DRIVER_LOG", "info").strip().lower()
    wanted = "warn" if wanted == "warning" else wanted
    return LEVELS.index(wanted) if wanted in LEVELS else LEVELS.index("info")


LOG_THRESHOLD = _log_threshold()
_log_lock = threading.Lock()


def log(level, message, machine=None, **fields):
    """One log line on stderr, as JSON in hclog's shape (protocol.md §6)."""
    if LEVELS.index(level) < LOG_THRESHOLD:
        return
    line = {"@level": level, "@message": message, "@module": NAME}
    if machine:
        line["machine"] = machine
    line.update({k: str(v) for k, v in fields.items()})
    text = json.dumps(line) + "\n"
    with _log_lock:  # calls run on several threads; keep lines whole
        sys.stderr.write(text)
        sys.stderr.flush()


class DriverError(Exception):
    """An error for the user: a gRPC status code, a message and a hint."""

    def __init__(self, code_name, message, hint=None):
        super().__init__(message)
        self.code_name = code_name
        self.message = message
        self.hint = hint


def invalid(message, hint=None):
    return DriverError("INVALID_ARGUMENT", message, hint)


def not_found(message, hint=None):
    return DriverError("NOT_FOUND", message, hint)


def failed_precondition(message, hint=None):
    return DriverError("FAILED_PRECONDITION", message, hint)


def internal(message, hint=None):
    return DriverError("INTERNAL", message, hint)


def clean_hint(hint):
    """gRPC metadata is one line of printable ASCII."""
    return "".join(c if " " <= c <= "~" else " " for c in hint)


# ---------------------------------------------------------------- the provider


def path(directory, name):
    return os.path.join(directory, name)


def running(directory):
    """Whether some process of the host still holds its lock."""
    try:
        fd = os.open(path(directory, LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False  # ours, so nobody else's; closing releases it
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def last_output(directory):
    """The last line the command wrote, for messages."""
    try:
        with open(path(directory, LOG), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [l.strip() for l in tail.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def start_host(m, cfg):
    """Starts the machine's command in a process group of its own.

    The command inherits an open file description of the lock file with an
    exclusive flock on it; the kernel releases the lock when the host's last
    process exits, so the lock, unlike a pid, tells whether the host runs.
    """
    os.makedirs(m.dir, exist_ok=True)
    fd = os.open(path(m.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # running already
        env = {k: v for k, v in os.environ.items() if k not in PLUGIN_VARS}
        env.update(
            MACHINE_NAME=m.name,
            MACHINE_DIR=m.dir,
            PYHELLO_ADDRESS=cfg["address"],
            PYHELLO_SSH_PORT=str(cfg["ssh_port"]),
            PYHELLO_ENGINE_PORT=str(cfg["engine_port"]),
        )
        if os.path.exists(path(m.dir, AUTHORIZED_KEYS)):
            env["PYHELLO_AUTHORIZED_KEYS"] = path(m.dir, AUTHORIZED_KEYS)
        with open(path(m.dir, LOG), "ab") as out:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", cfg["command"]],
                cwd=m.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own group: it outlives this process, which machine
                # ends (with its whole process group, if it must).
                process_group=0,
                pass_fds=(fd,),
            )
        with open(path(m.dir, PID), "w") as f:
            f.write(f"{proc.pid}\n")
    finally:
        os.close(fd)  # the host holds the lock now
    try:
        status = proc.wait(timeout=EARLY_EXIT)
    except subprocess.TimeoutExpired:
        # Reap it when it ends, or it stays a zombie while this process lives.
        threading.Thread(target=proc.wait, daemon=True).start()
        log("info", "host started", machine=m.name, pgid=proc.pid)
        return
    last = last_output(m.dir)
    raise failed_precondition(
        f"the host's command ended at once (exit status {status})" + (f": {last}" if last else ""),
        hint=f"its output is in {path(m.dir, LOG)}; the command must keep running "
        "in the foreground (no `&`, no daemon mode)",
    )


def signal_host(directory, sig):
    """Signals the host's process group, while the host runs (then the
    group exists and its id cannot have been reused)."""
    if not running(directory):
        return
    with open(path(directory, PID)) as f:
        pgid = int(f.read().strip())
    if pgid <= 1:
        raise internal(f"{PID} holds {pgid}")
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # gone meanwhile: what was wanted


def wait_stopped(directory, limit):
    deadline = time.monotonic() + limit
    while running(directory):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def forget_pid(directory):
    try:
        os.remove(path(directory, PID))
    except FileNotFoundError:
        pass


def kill_host(m):
    signal_host(m.dir, signal.SIGKILL)
    if not wait_stopped(m.dir, KILL_WAIT):
        raise internal(
            f"the host of machine `{m.name}` still runs {KILL_WAIT:.0f}s after SIGKILL",
            hint="a process of it may have left its process group; look for it with `ps`",
        )
    forget_pid(m.dir)


def stop_host(m, grace):
    signal_host(m.dir, signal.SIGTERM)
    if not wait_stopped(m.dir, grace):
        log("warn", f"the host did not stop within {grace}s of SIGTERM; killing it", machine=m.name)
        kill_host(m)
    forget_pid(m.dir)


# ---------------------------------------------------------------- flags


def flag_value(request, name):
    """The value the user gave, or None. machine sends the declared type;
    the conformance kit sends text for every type, so accept both."""
    if name not in request.flags:
        return None
    value = request.flags[name]
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_list_value":
        return list(value.string_list_value.values)
    return getattr(value, kind)


def flag_int(request, name, default):
    value = flag_value(request, name)
    if value is None:
        return default
    if isinstance(value, bool):
        raise invalid(f"--{name} must be a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"--{name} must be a whole number") from None


def flag_port(request, name, default, allow_zero):
    port = flag_int(request, name, default)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise invalid(
            f"--{name} {port} is not a port ({low}-65535)",
            hint="give a TCP port number" + (", or 0 for a host without SSH" if allow_zero else ""),
        )
    return port


def parse(request):
    """The machine's config from the create flags; PreCreateCheck and Create
    share it, so they agree."""
    command = flag_value(request, "pyhello-command")
    if not isinstance(command, str) or not command.strip():
        raise invalid(
            "the pyhello driver needs --pyhello-command",
            hint="give the command that runs the host in the foreground, "
            "e.g. --pyhello-command 'exec ./boot-vm.sh'",
        )
    stop_timeout = flag_int(request, "pyhello-stop-timeout", 30)
    if stop_timeout < 1:
        raise invalid(f"--pyhello-stop-timeout {stop_timeout} must be at least 1 second")
    return {
        "command": command,
        "address": flag_value(request, "pyhello-address") or "127.0.0.1",
        "ssh_user": flag_value(request, "pyhello-ssh-user") or "root",
        "ssh_port": flag_port(request, "pyhello-ssh-port", 0, True),
        "engine_port": flag_port(request, "pyhello-engine-port", 2376, False),
        "stop_timeout": stop_timeout,
    }


def host_port(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# ---------------------------------------------------------------- the service


def serve(stubs):
    """Builds the servicers on the generated stubs and runs the plugin."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    pb, pb_grpc, ctl_pb, ctl_grpc = stubs

    def abort(context, err):
        if err.hint:
            context.set_trailing_metadata(((HINT_METADATA, clean_hint(err.hint)),))
        context.abort(getattr(grpc.StatusCode, err.code_name), err.message)

    def to_driver_error(e):
        """Maps what a handler raised to a status; never UNKNOWN."""
        if isinstance(e, DriverError):
            return e
        if isinstance(e, FileNotFoundError):
            return DriverError("NOT_FOUND", str(e))
        if isinstance(e, PermissionError):
            return DriverError("PERMISSION_DENIED", str(e))
        return internal(f"{type(e).__name__}: {e}")

    def rpc(method):
        """Turns DriverError and other exceptions into statuses with hints."""

        def call(self, request, context):
            try:
                return method(self, request, context)
            except DriverError as e:
                abort(context, e)
            except Exception as e:  # an escaped exception would be UNKNOWN
                log("error", f"{method.__name__} failed: {e!r}")
                abort(context, to_driver_error(e))

        call.__name__ = method.__name__
        return call

    def machine_of(request):
        if not request.HasField("machine") or not request.machine.name:
            raise invalid("request has no machine")
        return request.machine

    def config_of(m):
        """What machine stored, or, after a failed create (config ""),
        the driver's own record."""
        text = m.config_json
        if not text:
            try:
                with open(path(m.dir, RECORD)) as f:
                    text = f.read()
            except FileNotFoundError:
                raise not_found(f"there is no pyhello host for machine `{m.name}`") from None
        try:
            return json.loads(text)
        except ValueError:
            raise internal(
                f"the stored config of machine `{m.name}` is not what this driver expects",
                hint="was the machine created by another version of this driver?",
            ) from None

    class Driver(pb_grpc.DriverServicer):
        def __init__(self, protocol_version):
            self.protocol_version = protocol_version

        @rpc
        def GetInfo(self, request, context):
            return pb.GetInfoResponse(
                name=NAME,
                version=VERSION,
                description=DESCRIPTION,
                sdk_name="grpcio (python example)",
                sdk_version=grpc.__version__,
                protocol_version=self.protocol_version,
                capabilities=[
                    pb.CAPABILITY_START,
                    pb.CAPABILITY_STOP,
                    pb.CAPABILITY_RESTART,
                    pb.CAPABILITY_KILL,
                ],
            )

        @rpc
        def GetCreateFlags(self, request, context):
            S, I = pb.FLAG_TYPE_STRING, pb.FLAG_TYPE_INT
            return pb.GetCreateFlagsResponse(
                flags=[
                    pb.Flag(
                        name="pyhello-command",
                        type=S,
                        usage="command that runs the host in the foreground "
                        "(run with /bin/sh -c in the machine's directory)",
                        env_var="PYHELLO_COMMAND",
                        required=True,
                    ),
                    pb.Flag(
                        name="pyhello-address",
                        type=S,
                        usage="address the host is reached at",
                        default_value="127.0.0.1",
                        env_var="PYHELLO_ADDRESS",
                    ),
                    pb.Flag(
                        name="pyhello-ssh-port",
                        type=I,
                        usage="SSH port of the host; 0: no SSH, machine does not provision Docker",
                        default_value="0",
                        env_var="PYHELLO_SSH_PORT",
                    ),
                    pb.Flag(
                        name="pyhello-ssh-user",
                        type=S,
                        usage="SSH user",
                        default_value="root",
                        env_var="PYHELLO_SSH_USER",
                    ),
                    pb.Flag(
                        name="pyhello-engine-port",
                        type=I,
                        usage="port Docker listens on",
                        default_value="2376",
                        env_var="PYHELLO_ENGINE_PORT",
                    ),
                    pb.Flag(
                        name="pyhello-stop-timeout",
                        type=I,
                        usage="seconds `stop` waits after SIGTERM before it kills the host",
                        default_value="30",
                    ),
                ]
            )

        @rpc
        def PreCreateCheck(self, request, context):
            machine_of(request)
            cfg = parse(request)
            warnings = []
            if cfg["ssh_port"] == 0:
                warnings.append(
                    "no --pyhello-ssh-port: machine will not set Docker up on this host; "
                    f"Docker must already listen at tcp://{host_port(cfg['address'], cfg['engine_port'])}"
                )
            return pb.PreCreateCheckResponse(warnings=warnings)

        def Create(self, request, context):
            # Server streaming: a generator of progress events, then exactly
            # one result. Errors end the stream with a status.
            try:
                m = machine_of(request)
                cfg = parse(request)
                if running(m.dir):
                    raise DriverError(
                        "ALREADY_EXISTS",
                        f"a pyhello host for machine `{m.name}` is already running",
                        hint=f"remove it first: machine rm -f {m.name}",
                    )
                yield pb.CreateEvent(progress=pb.Progress(message="writing the host's record", fraction=-1))
                os.makedirs(m.dir, exist_ok=True)
                if request.ssh_public_key:
                    with open(path(m.dir, AUTHORIZED_KEYS), "w") as f:
                        f.write(request.ssh_public_key.rstrip() + "\n")
                config_json = json.dumps(cfg)
                with open(path(m.dir, RECORD), "w") as f:
                    f.write(config_json)
                yield pb.CreateEvent(
                    progress=pb.Progress(message=f"starting the host: {cfg['command']}", fraction=-1)
                )
                start_host(m, cfg)
                yield pb.CreateEvent(result=pb.CreateResult(config_json=config_json))
            except DriverError as e:
                abort(context, e)
            except Exception as e:
                log("error", f"Create failed: {e!r}")
                abort(context, to_driver_error(e))

        @rpc
        def Remove(self, request, context):
            m = machine_of(request)
            # Idempotent: no host, nothing to do, and that is success.
            if running(m.dir):
                kill_host(m)
            for name in (RECORD, PID, LOCK, LOG, AUTHORIZED_KEYS):
                try:
                    os.remove(path(m.dir, name))
                except FileNotFoundError:
                    pass
            return pb.RemoveResponse()

        @rpc
        def GetState(self, request, context):
            m = machine_of(request)
            if not os.path.exists(path(m.dir, RECORD)):
                # Answered, not failed: the host does not exist.
                return pb.GetStateResponse(state=pb.STATE_NOT_FOUND)
            if running(m.dir):
                return pb.GetStateResponse(state=pb.STATE_RUNNING)
            detail = ""
            if os.path.exists(path(m.dir, PID)):  # ended without machine's stop
                last = last_output(m.dir)
                detail = "the host's command ended" + (f": {last}" if last else "")
            return pb.GetStateResponse(state=pb.STATE_STOPPED, detail=detail)

        @rpc
        def GetConnection(self, request, context):
            m = machine_of(request)
            cfg = config_of(m)
            has_ssh = cfg["ssh_port"] != 0
            return pb.GetConnectionResponse(
                ip=cfg["address"],
                ssh_host=cfg["address"] if has_ssh else "",
                ssh_port=cfg["ssh_port"],
                ssh_user=cfg["ssh_user"],
                ssh_key_path="",  # "": machine's own key for the machine
                docker_url=f"tcp://{host_port(cfg['address'], cfg['engine_port'])}",
            )

        # The optional operations, announced in GetInfo. None changes the
        # config, so none sets OperationResponse.config_json.

        @rpc
        def Start(self, request, context):
            m = machine_of(request)
            start_host(m, config_of(m))
            return pb.OperationResponse()

        @rpc
        def Stop(self, request, context):
            m = machine_of(request)
            stop_host(m, config_of(m)["stop_timeout"])
            return pb.OperationResponse()

        @rpc
        def Restart(self, request, context):
            m = machine_of(request)
            cfg = config_of(m)
            stop_host(m, cfg["stop_timeout"])
            start_host(m, cfg)
            return pb.OperationResponse()

        @rpc
        def Kill(self, request, context):
            m = machine_of(request)
            config_of(m)
            kill_host(m)
            return pb.OperationResponse()

    class Controller(ctl_grpc.GRPCControllerServicer):
        """go-plugin's controller: Shutdown answers, then the process ends."""

        def __init__(self, stop):
            self.stop = stop

        def Shutdown(self, request, context):
            self.stop.set("shutdown")
            return ctl_pb.Empty()

    class TokenCheck(grpc.ServerInterceptor):
        """TCP transport: every call, on every service, carries the token."""

        def __init__(self, token):
            self.token = token.encode()

        def intercept_service(self, continuation, details):
            got = dict(details.invocation_metadata).get(TOKEN_METADATA, "")
            handler = continuation(details)
            if hmac.compare_digest(got.encode(), self.token):
                return handler
            return deny_like(handler)

    def deny_like(handler):
        """A handler of the same shape as `handler` that refuses the call."""

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong driver token")

        if handler is None:
            return grpc.unary_unary_rpc_method_handler(deny)
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return make(
            deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    # 2. Negotiate: the highest version both speak; with none in common,
    # still answer (with our newest) so machine can name both versions.
    offered = []
    for v in os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "").split(","):
        v = v.strip()
        if v.isdigit():
            offered.append(int(v))
    common = [v for v in offered if v in PROTOCOLS]
    version = max(common) if common else max(PROTOCOLS)

    tcp = os.environ.get("MACHINE_DRIVER_TRANSPORT") == "tcp"
    interceptors = []
    if tcp:
        token = os.environ.get("MACHINE_DRIVER_TOKEN", "")
        if not token:
            log("error", "the tcp transport needs MACHINE_DRIVER_TOKEN; refusing to listen without it")
            return 1
        interceptors.append(TokenCheck(token))

    # 3. Listen, with every service registered, before printing the line.
    stop = Stop()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=interceptors)
    pb_grpc.add_DriverServicer_to_server(Driver(version), server)
    ctl_grpc.add_GRPCControllerServicer_to_server(Controller(stop), server)
    health_servicer = health.HealthServicer()
    health_servicer.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    socket_path = None
    if tcp:
        port = server.add_insecure_port("127.0.0.1:0")
        if port == 0:
            log("error", "cannot listen on 127.0.0.1")
            return 1
        network, address = "tcp", f"127.0.0.1:{port}"
    else:
        socket_dir = os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.gettempdir()
        socket_path = os.path.join(socket_dir, f"{NAME}-{os.getpid()}.sock")
        try:
            os.remove(socket_path)
        except FileNotFoundError:
            pass
        try:
            server.add_insecure_port("unix:" + socket_path)
        except RuntimeError as e:
            log("error", f"cannot bind socket {socket_path}: {e}")
            return 1
        network, address = "unix", socket_path
    server.start()

    # 4. The one line on stdout; 5. then nothing else there: fd 1 becomes
    # stderr, so a stray print cannot be taken for protocol output.
    sys.stdout.write(f"{CORE_PROTOCOL}|{version}|{network}|{address}|grpc\n")
    sys.stdout.flush()
    os.dup2(2, 1)
    log("debug", "serving", network=network, address=address, protocol=version)

    # 6. Serve until Shutdown, stdin's end (machine closed it or died), or
    # SIGTERM/SIGINT.
    threading.Thread(target=watch_stdin, args=(stop,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("signal"))
    signal.signal(signal.SIGINT, lambda *_: stop.set("signal"))
    why = stop.wait()
    log("debug", "stopping", reason=why)
    # Calls in flight get a grace period: longer when machine asked.
    server.stop(grace=2.0 if why == "shutdown" else 0.5).wait()
    if socket_path:
        try:
            os.remove(socket_path)
        except OSError:
            pass
    return 0


class Stop:
    """Why serving ends; the first reason wins. Set from handler threads,
    the stdin thread, and signal handlers, which run on the main thread
    between its waits: a plain lock-free flag and a pipe make that safe."""

    def __init__(self):
        self.reason = None
        self.read_fd, self.write_fd = os.pipe()

    def set(self, reason):
        if self.reason is None:
            self.reason = reason
        try:
            os.write(self.write_fd, b"x")
        except OSError:
            pass

    def wait(self):
        while True:
            try:
                os.read(self.read_fd, 1)
                return self.reason
            except InterruptedError:
                continue


def watch_stdin(stop):
    """machine holds our stdin open and never writes; its end means machine
    closed it or is gone."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    stop.set("stdin closed")


def main():
    if sys.argv[1:2] == ["--version"]:
        print(f"machine-driver-{NAME} {VERSION} (protocol {','.join(map(str, PROTOCOLS))})")
        return 0
    # 1. The cookie: without it a person ran us. Explain, on stderr only.
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write(
            f"This is a machine driver plugin (machine-driver-{NAME} {VERSION}); "
            "it is started by machine, not by hand.\n"
            f"Use it through machine, e.g. `machine create -d {NAME} NAME`; "
            f"`machine driver info {NAME}` shows what it offers.\n"
        )
        return 1
    # The stubs build.sh generated, beside this file.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "gen"))
    try:
        import grpc  # noqa: F401
        from machine.driver.v1 import driver_pb2, driver_pb2_grpc
        from plugin import controller_pb2, controller_pb2_grpc
    except ImportError as e:
        log("error", f"cannot load gRPC or the generated stubs: {e}; run build.sh")
        return 1
    code = serve((driver_pb2, driver_pb2_grpc, controller_pb2, controller_pb2_grpc))
    sys.stderr.flush()
    # Do not wait for handler threads stuck in a provider call.
    os._exit(code)


if __name__ == "__main__":
    if sys.version_info < (3, 11):
        sys.stderr.write("machine-driver-pyhello needs Python 3.11 or later\n")
        sys.exit(1)
    sys.exit(main())
