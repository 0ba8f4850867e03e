"""Start the clip_perception node.

    ros2 launch clip_perception perception.launch.py image_topic:=/camera/image_raw target:=mug
    ros2 launch clip_perception perception.launch.py model:=ViT-B/16 device:=cuda
    ros2 launch clip_perception perception.launch.py use_sim_time:=true  # `ros2 bag play --clock`
    ros2 launch clip_perception perception.launch.py image_transport:=compressed use_depth:=true \
        image_topic:=/camera/camera/color/image_raw \
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/camera/color/camera_info          # a RealSense

Parameters come from params_file (the installed config/perception.yaml unless
given); model, device and target override it only when given (an empty
argument keeps the file's value). Key a params file of your own as
`/**/clip_perception:` (any namespace); a plain `clip_perception:` key only
matches a node outside any namespace and is silently ignored under
namespace:=robot1 or an including launch file's PushRosNamespace.
image_topic and command_topic remap the node's relative `image` and `command`
topics (and `image/compressed` to image_topic + '/compressed', image_transport's
naming); depth_topic and camera_info_topic remap `depth` and `camera_info`;
image_transport and use_depth override the file's parameters when given.
Inside a namespace, relative names resolve under it.

large_frames: the node publishes frame-sized images (debug_image, heatmap), which
Fast DDS's default 512 KiB shared-memory segment cannot carry to other processes.
'auto' (default) gives the node config/fastdds_large_frames.xml unless
FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_DEFAULT_PROFILES_FILE is already set;
'true' always, 'false' never. The camera driver's process needs the profile too.

If the node exits with an error (a model that cannot be loaded, a crash), the
launch shuts down and `ros2 launch` exits non-zero, so a supervisor or CI sees it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from clip_perception.ros.dds_profile import PROFILE_ENV_VARS
from launch import LaunchDescription

PACKAGE = 'clip_perception'
NODE_NAME = 'clip_perception'  # the key in config/perception.yaml
TRUE_WORDS = ('true', '1')
FALSE_WORDS = ('false', '0')


def package_share() -> Path:
    """share/clip_perception (the source tree when the package is not installed)."""
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (LookupError, OSError, ValueError):  # not in the ament index: a source checkout
        return Path(__file__).resolve().parent.parent


def default_params_file() -> str:
    """The installed config/perception.yaml."""
    return str(package_share() / 'config' / 'perception.yaml')


def large_frames_env(choice: str, environ: Mapping[str, str], profile: str) -> dict[str, str]:
    """Environment for the node that loads the large-frame Fast DDS profile, or {}."""
    word = choice.strip().lower()
    if word == 'auto':
        use = not any(environ.get(name) for name in PROFILE_ENV_VARS)
    else:
        use = parse_bool('large_frames', choice, also='auto')
    return {name: profile for name in PROFILE_ENV_VARS} if use else {}


def parse_bool(name: str, text: str, also: str = '') -> bool:
    """A launch argument as a bool: true/false or 1/0, any case.

    ``also`` names another accepted word (handled by the caller) for the error message.
    """
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    choices = f'{also}, true or false' if also else 'true or false'
    raise ValueError(f"launch argument {name}:='{text}' must be {choices}")


class NodeFailed(RuntimeError):
    """The node exited with an error; raised inside launch so `ros2 launch` exits non-zero."""


def fail_on_error_exit(event, context) -> None:
    """OnProcessExit callback: raise when the node exits non-zero outside a shutdown.

    launch's LaunchService catches an exception raised while it handles an event,
    logs it, shuts the launch down and returns 1, which `ros2 launch` exits with.
    An exit during a shutdown (Ctrl-C, another process ending the launch) is not a
    failure of the node's own.
    """
    code = event.returncode
    if code != 0 and not context.is_shutdown:
        raise NodeFailed(f'{event.process_name} exited with code {code} '
                         '(see its log above); shutting the launch down')


def parameter_overrides(model: str, device: str, target: str,
                        use_sim_time: str) -> dict[str, object]:
    """Parameters that launch arguments set on top of the params file.

    An empty model, device or target is no override; use_sim_time is always set.
    """
    overrides: dict[str, object] = {'use_sim_time': parse_bool('use_sim_time', use_sim_time)}
    for name, value in (('model', model), ('device', device), ('target', target)):
        if value.strip():
            overrides[name] = value.strip()
    return overrides


def rgbd_overrides(image_transport: str, use_depth: str) -> dict[str, object]:
    """image_transport and use_depth parameters from launch arguments ('' = the file's)."""
    overrides: dict[str, object] = {}
    if image_transport.strip():
        overrides['image_transport'] = image_transport.strip()
    if use_depth.strip():
        overrides['use_depth'] = parse_bool('use_depth', use_depth)
    return overrides


def camera_overrides(cameras: str) -> dict[str, object]:
    """The cameras parameter from a comma-separated launch argument ('' = the file's)."""
    if not cameras.strip():
        return {}
    return {'cameras': [name.strip() for name in cameras.split(',')]}


def rgbd_remappings(image_topic: str, depth_topic: str,
                    camera_info_topic: str) -> list[tuple[str, str]]:
    """Remaps of the compressed colour, depth and camera_info inputs."""
    return [('image/compressed', image_topic.rstrip('/') + '/compressed'),
            ('depth', depth_topic), ('camera_info', camera_info_topic)]


def launch_setup(context, *args, **kwargs) -> list:
    """Build the Node from the launch arguments' values (OpaqueFunction callback)."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = parameter_overrides(arg('model'), arg('device'), arg('target'),
                                    arg('use_sim_time'))
    overrides.update(rgbd_overrides(arg('image_transport'), arg('use_depth')))
    overrides.update(camera_overrides(arg('cameras')))
    profile = str(package_share() / 'config' / 'fastdds_large_frames.xml')
    env = large_frames_env(arg('large_frames'), os.environ, profile)
    node = Node(
            package=PACKAGE,
            executable='perception_node',
            name=NODE_NAME,
            namespace=arg('namespace'),
            parameters=[arg('params_file'), overrides],
            remappings=[('image', arg('image_topic')), ('command', arg('command_topic'))]
            + rgbd_remappings(arg('image_topic'), arg('depth_topic'), arg('camera_info_topic')),
            arguments=['--ros-args', '--log-level', arg('log_level')],
            additional_env=env,
            output='screen',
            emulate_tty=True,
    )
    return [
        node,
        RegisterEventHandler(OnProcessExit(target_action=node, on_exit=fail_on_error_exit)),
    ]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments and the node."""
    return LaunchDescription([
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the node and its relative topics'),
        DeclareLaunchArgument(
            'image_topic', default_value='image',
            description='Camera topic (sensor_msgs/Image), e.g. /camera/image_raw'),
        DeclareLaunchArgument(
            'command_topic', default_value='command',
            description="Topic of commands (std_msgs/String), e.g. 'find the red mug'"),
        DeclareLaunchArgument(
            'params_file', default_value=default_params_file(),
            description='Parameter file; key it /**/' f'{NODE_NAME} (matches the node in '
                        f'any namespace; a plain {NODE_NAME} key is ignored in a namespace)'),
        DeclareLaunchArgument(
            'model', default_value='',
            description="CLIP model (ViT-B/32, ...), checkpoint path or module:factory; "
                        "'' keeps params_file's value"),
        DeclareLaunchArgument(
            'device', default_value='',
            description="auto | cpu | cuda | cuda:N; '' keeps params_file's value"),
        DeclareLaunchArgument(
            'target', default_value='',
            description="What to look for at start; '' keeps params_file's value"),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='true: use /clock (e.g. from `ros2 bag play --clock`)'),
        DeclareLaunchArgument(
            'large_frames', default_value='auto',
            description='auto | true | false: give the node the Fast DDS profile for '
                        'frame-sized messages (auto: unless a profile is already set)'),
        DeclareLaunchArgument(
            'image_transport', default_value='',
            description="raw (image) | compressed (image_topic + '/compressed'); "
                        "'' keeps params_file's value"),
        DeclareLaunchArgument(
            'use_depth', default_value='',
            description="true: subscribe depth and camera_info, publish 3D outputs; "
                        "'' keeps params_file's value"),
        DeclareLaunchArgument(
            'cameras', default_value='',
            description="Comma-separated camera names sharing one model (a,b: topics a/image, "
                        "a/detected, ...; image_topic remaps only the unnamed camera); "
                        "'' keeps params_file's value"),
        DeclareLaunchArgument(
            'depth_topic', default_value='depth',
            description='Depth topic registered to colour (16UC1 mm or 32FC1 m), e.g. '
                        '/camera/camera/aligned_depth_to_color/image_raw'),
        DeclareLaunchArgument(
            'camera_info_topic', default_value='camera_info',
            description='The colour camera\'s CameraInfo, e.g. /camera/camera/color/camera_info'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            choices=['debug', 'info', 'warn', 'error', 'fatal'],
            description='Logging level of the node'),
        OpaqueFunction(function=launch_setup),
    ])
