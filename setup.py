"""Install clip_perception with colcon (ament_python) or pip."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'clip_perception'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=[package_name, package_name + '.*']),
    data_files=[
        # The ament index marker and manifest: `ros2 run`, launch and
        # get_package_share_directory() find the package through these.
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    # Only what pip can always provide under these names. OpenCV is deliberately
    # not listed: on a ROS machine cv2 comes from apt (python3-opencv, no pip
    # metadata), and a pip opencv would shadow it. colcon ignores this list;
    # requirements.txt pins the full pip set (incl. opencv-python-headless).
    install_requires=[
        'setuptools',
        'numpy',
        'torch',
        'torchvision',
        'openai-clip',  # imports pkg_resources: keep setuptools<81 (requirements.txt)
    ],
    extras_require={
        'opencv': ['opencv-python-headless'],
        'bag': ['rosbags', 'rosbags-image'],
        'test': ['pytest>=8,<9', 'pytest-timeout', 'pyyaml'],  # <9: see requirements-dev.txt
    },
    python_requires='>=3.10',
    zip_safe=False,
    maintainer='clip_perception maintainers',
    maintainer_email='maintainers@users.noreply.h-seed-c874544d.example',
    description='Find a named object in camera frames with OpenAI CLIP (ROS 2 node).',
    license='Apache-2.0',
    keywords=['ROS', 'ROS 2', 'CLIP', 'perception'],
    classifiers=[
        'Intended Audience :: Developers',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Image Recognition',
    ],
    entry_points={
        'console_scripts': [
            'perception_node = clip_perception.ros.node:main',
        ],
    },
)
