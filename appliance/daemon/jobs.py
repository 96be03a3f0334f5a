"""What the daemon does for each request that takes time: picture → model → geometry → plan → arm.

Every path that could move the arm passes the same checks first, in order: the
answer parsed (``Prediction.ok``), the picture is still the table's, the grasp
centre has valid depth, the plan stays inside the workspace box. A failure at
any of them is a result with ``moved: false``: no grasp is sent to the arm.

"Still the table's": a pose is planned on the picture its conversation was
asked about. When the arm has moved since that picture was taken (a grasp
lifts, drops or pushes things) or it is older than ``robot.recheck_after_s``
(people move things too), the arm first goes to its observation pose, a new
picture is taken, and the depth where the hand would go must match the
conversation's picture (``geometry.depth_changed``); the plan then uses the new
depth. The conversation's picture stays the reference: every later grasp of the
conversation is checked against it again, at its own grasp centre.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from appliance.camera import Camera, Frame
from appliance.geometry import JAW_HALF_M, depth_changed, image_grasp_to_base, median_depth
from appliance.robot.plan import GraspPlan, MotionError, UnsafeTarget, plan_top_down
from appliance.runtime.annotate import annotate, png_bytes
from appliance.runtime.model import Prediction
from appliance.runtime.objects import CategoryNames, object_box
from appliance.runtime.worker import ModelWorker, RemoteSession

from .settings import ApplianceConfig
from .vocabulary import Vocabulary, not_understood

log = logging.getLogger(__name__)

MAX_SESSIONS = 16
RECHECK_MARGIN_M = 0.03
"""Beyond the open jaws, how far around the grasp centre the depth must be unchanged (fingers, a hand's width)."""


class JobError(RuntimeError):
    """A request that could not be carried out; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Conversation:
    """A session with the frame its image came from (refinements act on the same picture)."""

    session: RemoteSession
    frame: Frame
    motions: int = 0
    """The arm motions asked for before the frame was taken (``Jobs.motions``)."""
    taken: float = field(default_factory=time.monotonic)
    """When the frame was taken (``time.monotonic``: a clock set back at boot must not make it young)."""


def stale(taken: float, motions_then: int, motions_now: int, max_age_s: float, now: float | None = None) -> str:
    """Why a picture ``taken`` at that ``time.monotonic`` must be checked against a new one before a grasp is
    planned on it ('' when it need not): the arm moved since it was taken, or it is older than ``max_age_s``."""
    age = (time.monotonic() if now is None else now) - taken
    if motions_now != motions_then:
        return f"the arm has moved since this session's picture ({age:.0f} s ago)"
    if age > max_age_s:
        return f"this session's picture is {age:.0f} s old (older than {max_age_s:g} s)"
    return ""


def held_category(categories: CategoryNames, turns) -> str | None:
    """The category the last turn that named one named: a rotation's or a side shift's reasoning names no object,
    and its reply names the one the conversation holds."""
    return next((c for t in reversed(turns) if (c := categories.first(t.reasoning or ""))), None)


def prediction_fields(prediction: Prediction) -> dict:
    """The JSON-ready part of a prediction."""
    pose, written = prediction.pose, prediction.written
    return {
        "text": prediction.text,
        "reasoning": prediction.reasoning,
        "parsed": prediction.ok,
        "parse_error": prediction.error,
        "pose": None if pose is None else {"x": pose.x, "y": pose.y, "theta": pose.theta},
        "hint": list(prediction.hint),
        "written": None if written is None else {"x": written.x, "y": written.y, "theta": written.theta},
        "timings": prediction.timings.as_dict(),
    }


def _in_view(box: list[int] | None, prediction: Prediction) -> tuple[float, float, float, float] | None:
    """A camera-pixel box in the model's view (the annotated image's pixels)."""
    if box is None:
        return None
    crop, scale = prediction.crop, prediction.view.shape[1] / prediction.crop.side
    u0, v0, u1, v1 = box
    return ((u0 - crop.left) * scale, (v0 - crop.top) * scale, (u1 - crop.left) * scale, (v1 - crop.top) * scale)


def in_camera(box: tuple[float, float, float, float], crop, shape: tuple[int, int]) -> list[int] | None:
    """A box image-normalised in the model's view (``Prediction.box``) in whole camera pixels of an image of
    ``shape`` (rows, columns), half-open and clipped to it; None when nothing of it is left."""
    (u0, v0), (u1, v1) = crop.to_camera(box[0], box[1]), crop.to_camera(box[2], box[3])
    h, w = shape
    out = [max(0, math.floor(u0)), max(0, math.floor(v0)), min(w, math.ceil(u1)), min(h, math.ceil(v1))]
    return out if out[0] < out[2] and out[1] < out[3] else None


def reply_box(depth: list[int] | None, seen: list[int] | None) -> list[int] | None:
    """The reply's box: ``depth``, the depth image's object at the grasp centre (or the nearest a finger's reach
    away), unless the bundle's target check saw the object in the view's pixels (``seen``, the object of the
    category named) and the depth's box does not hold the middle of it or overlaps it less than ``SAME_BOX``: the
    depth then found another object, or none (a knife's 4 mm blade is no height, the ball beside it is), or two
    touching ones as one, and ``seen`` is the one named."""
    if seen is None or depth is None:
        return depth if seen is None else seen
    middle = ((seen[0] + seen[2]) / 2, (seen[1] + seen[3]) / 2)
    if depth[0] <= middle[0] < depth[2] and depth[1] <= middle[1] < depth[3] and overlap(depth, seen) >= SAME_BOX:
        return depth  # the same object: the depth's box is the exact one
    return seen  # another object, or two touching ones the depth sees as one


SAME_BOX = 0.5
"""The depth's box and the view's are one object's when they overlap by this much (intersection over union)."""


def overlap(a: list[int], b: list[int]) -> float:
    """Intersection over union of two boxes ``[u0, v0, u1, v1]``."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


class Jobs:
    """The daemon's long-running work, done one request at a time on the worker thread."""

    def __init__(self, config: ApplianceConfig, model: ModelWorker, camera: Camera, robot=None, recorder=None):
        self.config, self.model, self.camera, self.robot, self.recorder = config, model, camera, robot, recorder
        self.sessions: OrderedDict[str, Conversation] = OrderedDict()
        self.motions = 0
        """Arm motions asked for so far (each one, even one that failed, may have changed the table)."""
        self.categories = CategoryNames(model.manifest.categories or {})
        if not model.manifest.categories:
            log.warning("the bundle names no categories (an older export): replies name no object category")
        self.vocabulary = None
        if model.manifest.speech:
            self.vocabulary = Vocabulary.load(model.directory / model.manifest.speech)
        else:
            log.warning("the bundle has no vocabulary (speech.yaml): instructions are not checked for known words")

    def check_instruction(self, text: str, first: bool) -> None:
        """``JobError`` unless the model can ground ``text`` (appliance.daemon.vocabulary) and a first turn fits its context."""
        if self.vocabulary is not None:
            why = not_understood(text, self.vocabulary)
            if why:
                raise JobError("not_understood", f"{text[:60]!r} is not understood: {why}; nothing moves")
        if first:
            self.model.check_room(text)

    # -- requests -----------------------------------------------------------------------
    def predict(self, session_id: str, instruction: str) -> tuple[dict, bytes]:
        """A new picture and a fresh conversation; no motion."""
        frame = self._picture()
        conversation = Conversation(self.model.session(), frame, self.motions)
        m = self.config.model
        prediction = conversation.session.ask(instruction, frame.rgb, m.max_new_tokens, speculative=None)
        self._keep(session_id, conversation)
        return self._describe(prediction, frame)

    def refine(self, session_id: str, instruction: str) -> tuple[dict, bytes]:
        """A follow-up in an existing conversation, on the same picture."""
        conversation = self.sessions.get(session_id)
        if conversation is None:
            raise JobError("unknown_session", f"no session {session_id!r} (it ended, or the daemon restarted)")
        self.sessions.move_to_end(session_id)
        m = self.config.model
        prediction = conversation.session.ask(instruction, max_new_tokens=m.max_new_tokens, speculative=None)
        return self._describe(
            prediction, conversation.frame, held_category(self.categories, conversation.session.turns)
        )

    def execute(self, session_id: str, speed: float = 1.0) -> dict:
        """Carry out the latest pose of a session: checks, plan, motion, verification."""
        conversation = self.sessions.get(session_id)
        if conversation is None:
            raise JobError("unknown_session", f"no session {session_id!r}")
        prediction = conversation.session.turns[-1]
        plan, reason = self.plan(prediction, conversation.frame)
        if plan is not None:
            frame, reason = self._recheck(conversation, prediction, speed)
            if frame is not None:
                plan, reason = self.plan(prediction, frame)
                if plan is None:
                    reason = reason.removesuffix(": nothing moves") + (
                        " on the new picture: the arm went to its observation pose to take it and goes no further"
                    )
            else:
                plan = None
        if plan is None:
            return {"moved": False, "success": False, "stage": "check", "message": reason}
        robot = self._robot()
        plan = plan.slowed(speed) if speed < 1 else plan
        self.motions += 1
        # the plan's own time limit, the ready move before it (slowed alike) and the reply's way back
        outcome = robot.call("execute", plan, speed, timeout_s=plan.limits.timeout_s + 30 / speed)
        return {
            "moved": True,
            "success": outcome.success,
            "stage": outcome.stage,
            "message": outcome.message,
            "width": outcome.width,
            "seconds": outcome.seconds,
        }

    def _recheck(self, conversation: Conversation, prediction: Prediction, speed: float) -> tuple[Frame | None, str]:
        """The picture to plan on: the conversation's own while it is fresh, else a new one whose depth where the
        hand would go matches the conversation's (which stays the reference); None and why when it does not."""
        why = stale(conversation.taken, conversation.motions, self.motions, self.config.robot.recheck_after_s)
        if not why:
            return conversation.frame, ""
        log.info("%s: checking the table again before the grasp", why)
        self.observe(speed)
        frame = self._picture()
        old = conversation.frame
        u, v = prediction.crop.to_camera(prediction.pose.x, prediction.pose.y)
        z = median_depth(old.depth, u, v, self.config.depth_window) or 1.0
        radius = (self.config.robot.limits.open_width / 2 + RECHECK_MARGIN_M) * old.intrinsics.fx / z
        changed = depth_changed(old.depth, frame.depth, u, v, radius)
        if changed:
            return None, (
                f"{why}, and the table has changed where the hand would go: {changed}; the arm went to its "
                "observation pose to look and goes no further: send a new grasp"
            )
        return frame, ""

    def observe(self, speed: float = 1.0) -> None:
        """Move the arm out of the camera's view before a picture (when there is an arm)."""
        if self.robot is not None:
            self._motion("observe", speed)

    def home(self) -> dict:
        self._motion("home")
        return {"moved": True}

    def release(self) -> dict:
        self._motion("release")
        return {"moved": True}

    # -- steps ---------------------------------------------------------------------------
    def plan(self, prediction: Prediction, frame: Frame) -> tuple[GraspPlan | None, str]:
        """The grasp plan for a prediction, or None and why nothing may move."""
        if not prediction.ok:
            return None, f"the answer did not parse ({prediction.error}): nothing moves"
        if self.config.robot is None:
            return None, "this appliance has no arm configured"
        pose = prediction.pose
        u, v = prediction.crop.to_camera(pose.x, pose.y)
        surface = image_grasp_to_base(
            u, v, pose.theta, frame.depth, frame.intrinsics, self.config.handeye.matrix, self.config.depth_window
        )
        if surface is None:
            return None, f"no valid depth at the grasp centre (pixel {u:.0f}, {v:.0f}): nothing moves"
        try:
            return plan_top_down(surface, self.config.robot.workspace, self.config.robot.limits), ""
        except UnsafeTarget as exc:
            return None, f"{exc}: nothing moves"

    def _describe(self, prediction: Prediction, frame: Frame, held: str | None = None) -> tuple[dict, bytes]:
        """The reply fields of a prediction and its annotated image (PNG); a refusal is ``not_understood``. ``held``:
        the category a follow-up's conversation last named, for a reasoning that names none."""
        if prediction.refusal is not None:
            why = f"the model sees no {prediction.refusal} here"
            if prediction.gated:
                why = f"the presence check sees no {prediction.refusal} here: too few image patches show one"
            raise JobError("not_understood", f"{why} ({prediction.text!r}): nothing moves")
        fields = prediction_fields(prediction)
        fields["object"], box = None, None
        if prediction.ok:
            u, v = prediction.crop.to_camera(prediction.pose.x, prediction.pose.y)
            fields["pixel"] = {"u": u, "v": v}
            box = self._box(frame, u, v, prediction)
            named = prediction.resolved or self.categories.first(prediction.reasoning) or held
            fields["object"] = {"category": named, "box": box}
            plan, reason = self.plan(prediction, frame) if self.config.robot is not None else (None, "no arm")
            fields["target"] = None if plan is None else np.round(plan.grasp[:3, 3], 4).tolist()
            fields["executable"] = plan is not None
            fields["check"] = reason
        return fields, png_bytes(annotate(prediction.view, prediction.pose, _in_view(box, prediction)))

    def _box(self, frame: Frame, u: float, v: float, prediction: Prediction) -> list[int] | None:
        """The pixel box of the object the answer resolved to (``reply_box``)."""
        seen = None if prediction.box is None else in_camera(prediction.box, prediction.crop, frame.rgb.shape[:2])
        return reply_box(self._depth_box(frame, u, v), seen)

    def _depth_box(self, frame: Frame, u: float, v: float) -> list[int] | None:
        """The pixel box of the object at the grasp centre, or of the nearest one a finger's reach away."""
        z = median_depth(frame.depth, u, v, self.config.depth_window)
        if z is None:  # no reading at the centre: the reach at the picture's typical depth
            valid = frame.depth[np.isfinite(frame.depth) & (frame.depth > 0)]
            if not valid.size:
                return None
            z = float(np.median(valid))
        box = object_box(frame.depth, u, v, radius_px=JAW_HALF_M * frame.intrinsics.fx / z)
        return None if box is None else list(box)

    def _picture(self) -> Frame:
        frame = self.camera.read(timeout_s=2.0)
        if self.recorder is not None:
            self.recorder.write(frame)
        if not np.isfinite(frame.depth).any():
            log.warning("the frame has no valid depth at all")
        return frame

    def _keep(self, session_id: str, conversation: Conversation) -> None:
        self.sessions[session_id] = conversation
        self.sessions.move_to_end(session_id)
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)

    def _robot(self):
        if self.robot is None:
            raise JobError("no_robot", "this appliance has no arm configured")
        return self.robot

    def _motion(self, name: str, speed: float | None = None) -> None:
        """A named joint motion (or the hand's ``release``); ``speed`` slows a joint motion, and its time limit
        stretches alike."""
        robot = self._robot()
        self.motions += 1
        args = () if speed is None else (speed,)
        try:
            robot.call(name, *args, timeout_s=60 / (speed or 1.0))
        except MotionError as exc:
            raise JobError("motion_failed", f"{name}: {exc}") from exc
