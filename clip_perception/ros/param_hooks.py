"""Parameter callbacks split into a check and a change, on every rclpy.

``validate(params) -> SetParametersResult`` runs before the values are set
and must have no side effects; ``apply(params)`` runs after they are set, so
``ros2 param get`` and the node's behaviour agree. rclpy >= Iron (Jazzy) has
``add_post_set_parameters_callback``; on Humble, ``apply`` runs from a
one-shot timer on the executor just after the set has returned.
"""

from __future__ import annotations

from collections.abc import Callable


def has_post_set(node) -> bool:
    return hasattr(node, "add_post_set_parameters_callback")


def install(node, validate: Callable, apply: Callable[[list], None],
            post_set: bool | None = None) -> str:
    """Register the two callbacks; returns ``"post_set"`` or ``"timer"`` (the fallback)."""
    if post_set is None:
        post_set = has_post_set(node)
    if post_set:
        node.add_on_set_parameters_callback(validate)
        node.add_post_set_parameters_callback(apply)
        return "post_set"

    def validate_then_schedule(params):
        result = validate(params)
        if result.successful:
            timer = None

            def fire() -> None:
                node.destroy_timer(timer)
                apply(params)
            timer = node.create_timer(0.0, fire)
        return result

    node.add_on_set_parameters_callback(validate_then_schedule)
    return "timer"
