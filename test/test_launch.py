"""launch/perception.launch.py: its arguments, the Node it builds, and that node running.

Two kinds of test live here:

* Where launch, launch_ros and launch_testing are installed (a ROS 2 distro),
  this module is a launch_testing test: ``generate_test_description`` starts the
  launch file with the colour encoder and ``TestLaunchedNode`` checks the node
  comes up, latches its target and answers a command and a frame.
* Everywhere, ``TestLaunchFile*`` load the launch file against small stand-ins
  for launch / launch_ros / ament_index_python (given to the file through its own
  ``__import__``, so ``sys.modules`` is never touched) that record constructor
  arguments, and check the declared arguments, the Node and the OpaqueFunction's
  mapping of arguments to parameters. ``TestNodeFromLaunchFile`` then runs the
  real node with the command line launch_ros would build from that Node.

Written as unittest classes so they also run as launch_testing's active tests.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
import unittest
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "perception.launch.py"
PARAMS_FILE = REPO / "config" / "perception.yaml"
COLOR_MODEL = "clip_perception.testing.color_encoder:factory"
RED = (220, 40, 40)  # clip_perception.testing.color_encoder.PALETTE["red"]
# ROS_DOMAIN_IDs of this file: offsets 2-4 of the block conftest.py reserves (a
# unittest class cannot take the ros_domain fixture).
_DOMAIN_BASE = int(os.environ.get("CLIP_PERCEPTION_TEST_DOMAIN_BASE", "48"))
HERE_DOMAIN, NAMESPACE_DOMAIN, LAUNCH_TEST_DOMAIN = (_DOMAIN_BASE + i for i in (2, 3, 4))
DEFAULTS = {
    "namespace": "",
    "image_topic": "image",
    "command_topic": "command",
    "model": "",
    "device": "",
    "target": "",
    "use_sim_time": "false",
    "large_frames": "auto",
    "log_level": "info",
    "image_transport": "",
    "use_depth": "",
    "cameras": "",
    "depth_topic": "depth",
    "camera_info_topic": "camera_info",
}  # and params_file: share/clip_perception/config/perception.yaml

try:  # launch_testing first: without it, `launch` could resolve to this repo's launch/ dir
    import launch.launch_description_sources
    import launch_ros.actions  # noqa: F401
    import launch_testing
    import launch_testing.actions
    import launch_testing.asserts

    import launch
    HAVE_LAUNCH_TESTING = True
except ImportError:  # pip-only environment (this repo's venv)
    HAVE_LAUNCH_TESTING = False


# ------------------------------------------------------------------ stand-ins for launch

class Recorded:
    """A stand-in action/substitution: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


class FakeLaunchDescription(Recorded):
    @property
    def entities(self) -> list:
        return list(self.args[0]) if self.args else list(self.kwargs.get("initial_entities", []))


class FakeDeclareLaunchArgument(Recorded):
    @property
    def name(self) -> str:
        return self.args[0] if self.args else self.kwargs["name"]

    @property
    def default_value(self) -> str | None:
        return self.kwargs.get("default_value")


class FakeOpaqueFunction(Recorded):
    @property
    def function(self) -> Callable:
        return self.kwargs["function"] if "function" in self.kwargs else self.args[0]


class FakeLaunchConfiguration(Recorded):
    def perform(self, context) -> str:
        """As launch's: the value the context holds for this argument."""
        return context.launch_configurations[self.args[0]]


class FakeNode(Recorded):
    pass


class FakeRegisterEventHandler(Recorded):
    @property
    def event_handler(self):
        return self.args[0] if self.args else self.kwargs["event_handler"]


class FakeOnProcessExit(Recorded):
    pass


class FakeExitEvent:
    """What launch's ProcessExited carries that the launch file reads."""

    def __init__(self, returncode: int, process_name: str = "perception_node-1"):
        self.returncode = returncode
        self.process_name = process_name


class FakeContext:
    """What LaunchConfiguration.perform reads from a LaunchContext."""

    def __init__(self, launch_configurations: dict[str, str], is_shutdown: bool = False):
        self.launch_configurations = dict(launch_configurations)
        self.is_shutdown = is_shutdown


class PackageNotFoundError(KeyError):
    """As ament_index_python's (a KeyError)."""


def fake_modules(share_dir: Path | None) -> dict[str, types.ModuleType]:
    """launch, launch.actions, launch.substitutions, launch_ros.actions, ament_index_python."""
    def module(name: str, **attrs) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    def get_package_share_directory(package: str) -> str:
        if share_dir is None or package != "clip_perception":
            raise PackageNotFoundError(package)
        return str(share_dir)

    mods = {
        "launch": module("launch", LaunchDescription=FakeLaunchDescription),
        "launch.actions": module("launch.actions", DeclareLaunchArgument=FakeDeclareLaunchArgument,
                                 OpaqueFunction=FakeOpaqueFunction,
                                 RegisterEventHandler=FakeRegisterEventHandler),
        "launch.event_handlers": module("launch.event_handlers",
                                        OnProcessExit=FakeOnProcessExit),
        "launch.substitutions": module("launch.substitutions",
                                       LaunchConfiguration=FakeLaunchConfiguration),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=FakeNode),
        "ament_index_python": module("ament_index_python"),
        "ament_index_python.packages": module(
            "ament_index_python.packages", PackageNotFoundError=PackageNotFoundError,
            get_package_share_directory=get_package_share_directory),
    }
    mods["launch"].actions = mods["launch.actions"]
    mods["launch"].substitutions = mods["launch.substitutions"]
    mods["launch"].event_handlers = mods["launch.event_handlers"]
    mods["launch_ros"].actions = mods["launch_ros.actions"]
    mods["ament_index_python"].packages = mods["ament_index_python.packages"]
    return mods


def load_launch_file(share_dir: Path | None) -> types.ModuleType:
    """Execute the launch file with the stand-ins as its launch modules."""
    fakes = fake_modules(share_dir)
    roots = {name.partition(".")[0] for name in fakes}
    real_import = builtins.__import__

    def isolated_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.partition(".")[0] in roots:
            if name not in fakes:
                raise ImportError(f"the test has no stand-in for {name}")
            return fakes[name] if fromlist else fakes[name.partition(".")[0]]
        return real_import(name, globals, locals, fromlist, level)

    module = types.ModuleType("perception_launch_under_test")
    module.__file__ = str(LAUNCH_FILE)
    module.__dict__["__builtins__"] = {**vars(builtins), "__import__": isolated_import}
    exec(compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec"), module.__dict__)
    return module


def describe(share_dir: Path | None = None):
    """(module, declared arguments by name, the OpaqueFunction) of the launch file."""
    module = load_launch_file(share_dir)
    description = module.generate_launch_description()
    assert isinstance(description, FakeLaunchDescription)
    entities = description.entities
    arguments = {e.name: e for e in entities if isinstance(e, FakeDeclareLaunchArgument)}
    opaque = [e for e in entities if isinstance(e, FakeOpaqueFunction)]
    assert len(opaque) == 1 and entities[-1] is opaque[0], "one OpaqueFunction, after the args"
    return module, arguments, opaque[0]


def actions_for(overrides: dict[str, str], share_dir: Path = REPO) -> list:
    """The actions the launch file's OpaqueFunction returns for these launch arguments."""
    _, arguments, opaque = describe(share_dir)
    values = {name: arg.default_value for name, arg in arguments.items()}
    unknown = set(overrides) - set(values)
    assert not unknown, f"not declared: {unknown}"
    values.update(overrides)
    return list(opaque.function(FakeContext(values)))


def node_for(overrides: dict[str, str], share_dir: Path = REPO) -> FakeNode:
    """The Node the launch file builds for these launch arguments (others at defaults)."""
    nodes = [a for a in actions_for(overrides, share_dir) if isinstance(a, FakeNode)]
    assert len(nodes) == 1, nodes
    return nodes[0]


# ------------------------------------------------------------------ launch file checks

class TestLaunchFileArguments(unittest.TestCase):
    def test_declared_arguments_and_defaults(self):
        with tempfile.TemporaryDirectory() as share:
            _, arguments, _ = describe(Path(share))
            self.assertEqual(set(arguments), set(DEFAULTS) | {"params_file"})
            for name, default in DEFAULTS.items():
                self.assertEqual(arguments[name].default_value, default, name)
            # The installed parameter file, found through the ament index.
            self.assertEqual(arguments["params_file"].default_value,
                             str(Path(share) / "config" / "perception.yaml"))
            for name, arg in arguments.items():
                self.assertTrue(arg.kwargs.get("description"), f"{name} has no description")

    def test_params_file_default_falls_back_to_source_tree(self):
        _, arguments, _ = describe(share_dir=None)  # package not in the ament index
        self.assertEqual(arguments["params_file"].default_value, str(PARAMS_FILE))
        self.assertTrue(PARAMS_FILE.is_file())


class TestLaunchFileNode(unittest.TestCase):
    def test_node_with_default_arguments(self):
        node = node_for({})
        kw = node.kwargs
        self.assertEqual(kw["package"], "clip_perception")
        self.assertEqual(kw["executable"], "perception_node")
        self.assertEqual(kw["name"], "clip_perception")
        self.assertEqual(kw["namespace"], "")
        self.assertEqual(kw["remappings"], [
            ("image", "image"), ("command", "command"), ("image/compressed", "image/compressed"),
            ("depth", "depth"), ("camera_info", "camera_info")])
        # Only use_sim_time is set on top of the file: model, device, target keep its values.
        self.assertEqual(kw["parameters"], [str(PARAMS_FILE), {"use_sim_time": False}])
        self.assertIs(kw["parameters"][1]["use_sim_time"], False)
        self.assertEqual(kw["arguments"], ["--ros-args", "--log-level", "info"])
        self.assertEqual(kw["output"], "screen")
        self.assertTrue(kw["emulate_tty"])

    def test_node_with_arguments(self):
        node = node_for({
            "namespace": "robot1", "image_topic": "/camera/image_raw",
            "command_topic": "/voice/command", "params_file": "/tmp/my.yaml",
            "model": f" {COLOR_MODEL} ", "device": "cpu", "target": "red mug",
            "use_sim_time": "True", "log_level": "debug", "large_frames": "false",
        })
        kw = node.kwargs
        self.assertEqual(kw["namespace"], "robot1")
        self.assertEqual(kw["remappings"][:2],
                         [("image", "/camera/image_raw"), ("command", "/voice/command")])
        self.assertEqual(kw["remappings"][2], ("image/compressed", "/camera/image_raw/compressed"))
        self.assertEqual(kw["parameters"], ["/tmp/my.yaml", {
            "use_sim_time": True, "model": COLOR_MODEL, "device": "cpu", "target": "red mug"}])
        self.assertIs(kw["parameters"][1]["use_sim_time"], True)
        self.assertEqual(kw["arguments"], ["--ros-args", "--log-level", "debug"])
        self.assertEqual(kw["additional_env"], {})

    def test_only_given_arguments_override(self):
        for given, expected in [
            ({"model": "ViT-B/16"}, {"use_sim_time": False, "model": "ViT-B/16"}),
            ({"device": "cuda:1"}, {"use_sim_time": False, "device": "cuda:1"}),
            ({"model": "  ", "use_sim_time": "1"}, {"use_sim_time": True}),
            ({"use_sim_time": "0"}, {"use_sim_time": False}),
        ]:
            with self.subTest(given=given):
                self.assertEqual(node_for(given).kwargs["parameters"][1], expected)

    def test_cameras_argument_becomes_a_list_parameter(self):
        self.assertNotIn("cameras", node_for({}).kwargs["parameters"][1])
        self.assertEqual(node_for({"cameras": " front, back "}).kwargs["parameters"][1],
                         {"use_sim_time": False, "cameras": ["front", "back"]})

    def test_bad_use_sim_time_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "use_sim_time"):
            node_for({"use_sim_time": "maybe"})

    def test_large_frames_profile_env(self):
        module = load_launch_file(REPO)
        profile = "/share/config/fastdds_large_frames.xml"
        both = {"FASTRTPS_DEFAULT_PROFILES_FILE": profile,
                "FASTDDS_DEFAULT_PROFILES_FILE": profile}
        env = module.large_frames_env
        self.assertEqual(env("auto", {}, profile), both)
        self.assertEqual(env("auto", {"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}, profile), {})
        self.assertEqual(env("auto", {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, profile), {})
        self.assertEqual(env("true", {"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}, profile),
                         both)
        self.assertEqual(env("false", {}, profile), {})
        with self.assertRaises(ValueError):
            env("sometimes", {}, profile)
        # The node gets the installed profile, which exists.
        node_env = node_for({"large_frames": "true"}).kwargs["additional_env"]
        self.assertEqual(set(node_env), set(both))
        self.assertEqual(node_env["FASTRTPS_DEFAULT_PROFILES_FILE"],
                         str(REPO / "config" / "fastdds_large_frames.xml"))
        self.assertTrue(Path(node_env["FASTRTPS_DEFAULT_PROFILES_FILE"]).is_file())


    def test_bad_large_frames_error_names_every_choice(self):
        for word in ("maybe", "sometimes", ""):
            with self.subTest(word=word):
                with self.assertRaises(ValueError) as caught:
                    node_for({"large_frames": word})
                message = str(caught.exception)
                for choice in ("auto", "true", "false", "large_frames"):
                    self.assertIn(choice, message)


class TestNodeExit(unittest.TestCase):
    """A node that dies (bad model, crash) fails the launch, so `ros2 launch` exits non-zero.

    launch's LaunchService logs an exception raised while it handles an event,
    shuts the launch down and returns 1 from run(), which `ros2 launch` exits with.
    """

    def handler(self):
        actions = actions_for({})
        node = next(a for a in actions if isinstance(a, FakeNode))
        handlers = [a.event_handler for a in actions if isinstance(a, FakeRegisterEventHandler)]
        self.assertEqual(len(handlers), 1, "one exit handler registered")
        on_exit = handlers[0]
        self.assertIsInstance(on_exit, FakeOnProcessExit)
        self.assertIs(on_exit.kwargs["target_action"], node)  # this node's exit only
        return on_exit.kwargs["on_exit"]

    def test_error_exit_raises(self):
        on_exit = self.handler()
        for code in (1, 2, -11, 255):
            with self.subTest(code=code):
                with self.assertRaisesRegex(RuntimeError, f"code {code}"):
                    on_exit(FakeExitEvent(code), FakeContext({}))

    def test_clean_exit_and_exit_during_shutdown_pass(self):
        on_exit = self.handler()
        self.assertIsNone(on_exit(FakeExitEvent(0), FakeContext({})))
        for code in (0, -2, -15, 1):  # Ctrl-C / SIGTERM while the launch is shutting down
            with self.subTest(code=code):
                self.assertIsNone(on_exit(FakeExitEvent(code), FakeContext({}, is_shutdown=True)))


class TestParamsFile(unittest.TestCase):
    def test_structure(self):
        data = yaml.safe_load(PARAMS_FILE.read_text())
        module = load_launch_file(REPO)
        # Any namespace: a plain node-name key is ignored once the node is namespaced.
        key = f"/**/{module.NODE_NAME}"
        self.assertEqual(list(data), [key])
        self.assertEqual(list(data[key]), ["ros__parameters"])
        params = data[key]["ros__parameters"]
        self.assertIsInstance(params, dict)
        for name in ("model", "device", "target"):  # what the launch file may override
            self.assertIsInstance(params.get(name), str, name)
        self.assertNotIn("use_sim_time", params)  # the launch file's to set

    def test_matches_the_nodes_parameter_table(self):
        try:
            from clip_perception.ros.parameters import PARAMS
        except ImportError as exc:  # rcl_interfaces missing
            self.skipTest(f"clip_perception.ros.parameters not importable: {exc}")
        params = next(iter(yaml.safe_load(PARAMS_FILE.read_text()).values()))["ros__parameters"]
        self.assertEqual(set(params), {p.name for p in PARAMS})
        for p in PARAMS:
            self.assertEqual((type(params[p.name]), params[p.name]), (type(p.default), p.default),
                             p.name)


# ------------------------------------------------------------------ the node, observed over DDS

def _loopback_vars(domain: int) -> dict[str, str]:
    """Discovery on loopback only, in ``domain``."""
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)}
    if os.environ.get("ROS_DISTRO") == "humble":  # no ROS_AUTOMATIC_DISCOVERY_RANGE before Jazzy
        env["ROS_LOCALHOST_ONLY"] = "1"
    return env


def _loopback_env(env: dict[str, str], domain: int) -> dict[str, str]:
    env = {**env, **_loopback_vars(domain)}
    if "ROS_LOCALHOST_ONLY" not in _loopback_vars(domain):
        env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated from Jazzy on; the range rules
    return env


class Probe:
    """A node of the test's own (own rclpy context) that watches and drives the node."""

    def __init__(self, domain: int, namespace: str, image_topic: str, command_topic: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import (
            DurabilityPolicy,
            QoSProfile,
            ReliabilityPolicy,
            qos_profile_sensor_data,
        )
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, String

        self._rclpy = rclpy
        self._Image, self._String = Image, String
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("clip_launch_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.targets: list[str] = []
        self.detected: list[bool] = []
        prefix = f"/{namespace}" if namespace else ""
        self.node.create_subscription(String, f"{prefix}/targets",
                                      lambda m: self.targets.append(m.data), latched)
        self.node.create_subscription(Bool, f"{prefix}/detected",
                                      lambda m: self.detected.append(m.data), 10)
        self.commands = self.node.create_publisher(String, command_topic, 10)
        self.images = self.node.create_publisher(Image, image_topic, qos_profile_sensor_data)

    def wait_for(self, condition: Callable[[], bool], timeout: float,
                 every: Callable[[], None] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        next_action = 0.0
        while time.monotonic() < deadline:
            if condition():
                return True
            if every is not None and time.monotonic() >= next_action:
                every()
                next_action = time.monotonic() + 0.3
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def send_command(self, text: str) -> None:
        self.commands.publish(self._String(data=text))

    def send_red_frame(self) -> None:
        import numpy as np

        pixels = np.empty((48, 64, 3), dtype=np.uint8)
        pixels[:] = RED
        msg = self._Image(height=48, width=64, encoding="rgb8", is_bigendian=0, step=64 * 3,
                          data=pixels.tobytes())
        msg.header.frame_id = "camera"
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.images.publish(msg)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def check_node_behaviour(test: unittest.TestCase, probe: Probe, log: Callable[[], str]) -> None:
    """Target from the launch argument, a red frame detected, a command re-targets."""
    test.assertTrue(probe.wait_for(lambda: "red" in probe.targets, 90.0),
                    f"no 'red' on targets (got {probe.targets}); node log:\n{log()}")
    test.assertTrue(probe.wait_for(lambda: True in probe.detected, 30.0, probe.send_red_frame),
                    f"red frames not detected (got {probe.detected[-5:]}); node log:\n{log()}")
    test.assertTrue(
        probe.wait_for(lambda: "blue cube" in probe.targets, 30.0,
                       lambda: probe.send_command("find the blue cube")),
        f"command not answered (targets {probe.targets}); node log:\n{log()}")


def launch_command(node: FakeNode, overrides_file: Path) -> list[str]:
    """The command line launch_ros builds for a Node (dict parameters go in a yaml file)."""
    kw = node.kwargs
    script = Path(sys.executable).parent / kw["executable"]  # the console script, if installed
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m",
                                                   "clip_perception.ros.node"]
    cmd += list(kw.get("arguments", []))
    cmd += ["--ros-args", "-r", f"__node:={kw['name']}"]
    if kw.get("namespace"):
        cmd += ["-r", f"__ns:=/{kw['namespace'].lstrip('/')}"]
    for params in kw["parameters"]:
        if isinstance(params, dict):
            overrides_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
            params = str(overrides_file)
        cmd += ["--params-file", params]
    for old, new in kw["remappings"]:
        cmd += ["-r", f"{old}:={new}"]
    return cmd


class TestLaunchFileRgbd(unittest.TestCase):
    def test_realsense_topics_and_rgbd_parameters(self):
        kw = node_for({
            "image_topic": "/camera/camera/color/image_raw", "image_transport": "compressed",
            "use_depth": "true", "depth_topic": "/camera/camera/aligned_depth_to_color/image_raw",
            "camera_info_topic": "/camera/camera/color/camera_info"}).kwargs
        self.assertEqual(kw["remappings"][2:], [
            ("image/compressed", "/camera/camera/color/image_raw/compressed"),
            ("depth", "/camera/camera/aligned_depth_to_color/image_raw"),
            ("camera_info", "/camera/camera/color/camera_info")])
        self.assertEqual(kw["parameters"][1], {"use_sim_time": False,
                                               "image_transport": "compressed",
                                               "use_depth": True})
        with self.assertRaises(ValueError):
            node_for({"use_depth": "maybe"})


@contextlib.contextmanager
def node_process(node: FakeNode, tmp: Path, domain: int):
    """The real node, started with the command line launch_ros builds from ``node``.

    Yields a function returning the node's log; on exit, SIGINT and the exit code
    is checked to be 0.
    """
    log_path = tmp / "node.log"
    env = _loopback_env({**os.environ, **node.kwargs["additional_env"]}, domain)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(launch_command(node, tmp / "overrides.yaml"), env=env, cwd=tmp,
                                stdout=log_file, stderr=subprocess.STDOUT)

    def log() -> str:
        return log_path.read_text(errors="replace")

    try:
        yield log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    assert code == 0, log()


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)  # waits of up to 90 s for the node to come up, then 30 s each
class TestNodeFromLaunchFile(unittest.TestCase):
    """The real node, started with what the launch file's Node says (no launch needed)."""

    def test_node_runs_with_launch_file_arguments(self):
        pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
        tag = f"clip_here_{os.getpid()}"
        image_topic, command_topic = f"/{tag}/camera/image", f"/{tag}_command"
        node = node_for({"namespace": tag, "model": COLOR_MODEL, "device": "cpu",
                         "target": "red", "image_topic": image_topic,
                         "command_topic": command_topic, "large_frames": "false"})
        with tempfile.TemporaryDirectory() as tmp, \
                node_process(node, Path(tmp), HERE_DOMAIN) as log:
            probe = Probe(HERE_DOMAIN, tag, image_topic, command_topic)
            try:
                check_node_behaviour(self, probe, log)
            finally:
                probe.close()

    def test_params_file_applies_in_a_namespace(self):
        """A copy of the shipped params file with changed values, under namespace:=robot1."""
        pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")
        from rcl_interfaces.srv import GetParameters

        data = yaml.safe_load(PARAMS_FILE.read_text())
        (key,) = data  # keep the shipped file's key: what a user copying it gets
        params = data[key]["ros__parameters"]
        params.update(model=COLOR_MODEL, device="cpu", target="green thing",
                      presence_threshold=0.37)
        namespace = "robot1"
        with tempfile.TemporaryDirectory() as tmp:
            params_file = Path(tmp) / "my_params.yaml"
            params_file.write_text(yaml.safe_dump(data))
            node = node_for({"namespace": namespace, "params_file": str(params_file),
                             "large_frames": "false"})  # model, device, target: the file's
            with node_process(node, Path(tmp), NAMESPACE_DOMAIN) as log:
                probe = Probe(NAMESPACE_DOMAIN, namespace, f"/{namespace}/image",
                              f"/{namespace}/command")
                try:
                    self.assertTrue(probe.wait_for(lambda: "green thing" in probe.targets, 90.0),
                                    f"target from the file not used (targets {probe.targets}); "
                                    f"node log:\n{log()}")
                    client = probe.node.create_client(
                        GetParameters, f"/{namespace}/clip_perception/get_parameters")
                    self.assertTrue(probe.wait_for(client.service_is_ready, 30.0), log())
                    future = client.call_async(GetParameters.Request(
                        names=["presence_threshold", "model"]))
                    self.assertTrue(probe.wait_for(future.done, 30.0), log())
                    threshold, model = future.result().values
                    self.assertEqual(threshold.double_value, 0.37)
                    self.assertEqual(model.string_value, COLOR_MODEL)
                finally:
                    probe.close()


# ------------------------------------------------------------------ launch_testing

if HAVE_LAUNCH_TESTING:
    LT_NAMESPACE = "clip_launch_test"
    LT_IMAGE = f"/{LT_NAMESPACE}_camera/image"
    LT_COMMAND = f"/{LT_NAMESPACE}_command"

    @pytest.mark.launch_test
    def generate_test_description():
        """The launch file with the colour encoder, loopback discovery and a domain of its own."""
        from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable

        return launch.LaunchDescription([
            *[SetEnvironmentVariable(k, v) for k, v in _loopback_vars(LAUNCH_TEST_DOMAIN).items()],
            IncludeLaunchDescription(
                launch.launch_description_sources.PythonLaunchDescriptionSource(
                    str(LAUNCH_FILE)),
                launch_arguments={
                    "namespace": LT_NAMESPACE, "model": COLOR_MODEL, "device": "cpu",
                    "target": "red", "image_topic": LT_IMAGE, "command_topic": LT_COMMAND,
                    "large_frames": "false",
                }.items()),
            launch_testing.actions.ReadyToTest(),
        ])

    class TestLaunchedNode(unittest.TestCase):
        def test_node_comes_up_and_answers(self):
            os.environ.update(_loopback_vars(LAUNCH_TEST_DOMAIN))
            probe = Probe(LAUNCH_TEST_DOMAIN, LT_NAMESPACE, LT_IMAGE, LT_COMMAND)
            try:
                check_node_behaviour(self, probe, lambda: "(see the launch output)")
            finally:
                probe.close()

    @launch_testing.post_shutdown_test()
    class TestShutdown(unittest.TestCase):
        def test_exit_code(self, proc_info):
            launch_testing.asserts.assertExitCodes(proc_info)
else:
    def test_launch_testing_integration():
        pytest.importorskip("launch_testing", reason="launch_testing is not installed (it "
                            "comes with a ROS 2 distro, not from PyPI); the launch file is "
                            "checked against stand-ins by the tests above")
