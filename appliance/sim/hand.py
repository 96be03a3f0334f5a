"""A Franka Hand for franky-sim that grasps like the real one.

franky-sim's gripper drives the fingers to the commanded width, so a grasp
squeezes only if the object is wider than the command, and an empty grasp
succeeds. The real hand closes until it meets resistance, holds the given
force, and, when the final width is outside [width − ε_inner, width + ε_outer],
answers "unsuccessful" (libfranka's ``grasp`` then returns false); after a
successful grasp its state says ``is_grasped`` for as long as the width stays
in that window (an object slipping out clears it). This server does the same,
so that the appliance's robot code is identical for both.
"""

from __future__ import annotations

from franky_sim.franka_gripper_server import (
    _SETTLE_STEPS,
    _SETTLE_THRESHOLD,
    BaseCommand,
    FrankaGripperServer,
    GripperCommand,
    GripperCommandStatus,
    _MotionState,
)

SQUEEZE_TARGET = -0.2
"""A width far below zero: the finger PD saturates at the force limit, i.e. squeezes with ``force``."""
EMPTY_WIDTH = 0.0005
"""Metres: fingers this close hold nothing. The squeeze then stops (the goal becomes 0), or the two fingers, pushed
into each other at full force, can slip past one another and stay crossed: the hand then reads about -49 mm and
closes on nothing in every later trial (seen in Table II, from one grasp that closed against the table on)."""


class RealHandGripperServer(FrankaGripperServer):
    """Grasp = close with the given force until blocked; success judged on the settled width."""

    def start_grasp(self, width, speed, force, epsilon_inner, epsilon_outer, command_id, tcp_socket) -> None:
        self._robot.set_hand_goal(SQUEEZE_TARGET, speed, force)
        self._squeeze, self._shut = (speed, force), False
        self._goal_width = width
        self._goal_epsilon_inner = epsilon_inner
        self._goal_epsilon_outer = epsilon_outer
        self._start_motion(_MotionState.GRASPING, GripperCommand.kGrasp, command_id, tcp_socket)

    def _check_motion_state(self) -> None:
        if self._motion_state is not _MotionState.GRASPING:
            super()._check_motion_state()
            return
        width = self._robot.hand_width
        if width < EMPTY_WIDTH and not self._shut:  # nothing between the fingers: hold them shut, no more squeezing
            self._robot.set_hand_goal(0.0, *self._squeeze)
            self._shut = True
        settled = abs(width - self._prev_width) < _SETTLE_THRESHOLD
        self._prev_width = width
        self._settling_steps = self._settling_steps + 1 if settled else 0
        if self._settling_steps < _SETTLE_STEPS:
            return
        low, high = self._goal_width - self._goal_epsilon_inner, self._goal_width + self._goal_epsilon_outer
        self._is_grasping = low <= width <= high
        status = GripperCommandStatus.kSuccess if self._is_grasping else GripperCommandStatus.kUnsuccessful
        self._motion_state, self._settling_steps = _MotionState.IDLE, 0
        if self._pending_command_id is not None and self._pending_tcp_socket is not None:
            BaseCommand.send_response(
                self._pending_tcp_socket,
                GripperCommand.kGrasp,
                self._pending_command_id,
                status,
                command_type_struct="H",
                status_type_struct="H",
            )
        self._pending_command_id = self._pending_tcp_socket = self._pending_command_type = None

    def _post_process_commands(self) -> None:
        super()._post_process_commands()
        if self._motion_state is _MotionState.IDLE and self._is_grasping:  # holding: re-judge every cycle
            width = self._robot.hand_width
            self._is_grasping = (
                self._goal_width - self._goal_epsilon_inner <= width <= self._goal_width + self._goal_epsilon_outer
            )
