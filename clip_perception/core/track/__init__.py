"""Tracks: identity across frames, steady presence, filtered positions (no ROS)."""
