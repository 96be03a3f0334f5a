"""Grasp datasets: Cornell-format and Jacquard readers, splits and augmentation."""

from __future__ import annotations

from pathlib import Path

from .base import GraspDataset
from .cornell import CornellDataset
from .files import DatasetFormatError
from .jacquard import JacquardDataset
from .ocid_vlg import OcidVlgDataset
from .sample import GraspLabels, GraspSample

__all__ = [
    "CornellDataset",
    "DatasetFormatError",
    "GraspDataset",
    "GraspLabels",
    "GraspSample",
    "JacquardDataset",
    "OcidVlgDataset",
    "open_dataset",
]


def open_dataset(root: Path | str, objects: Path | None = None) -> GraspDataset:
    """Open a dataset root, telling Cornell-format, Jacquard and OCID-VLG (its test split) apart by their files."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    if next((root / "refer").glob("*/test_expressions.json"), None) is not None:
        if objects is not None:
            raise ValueError("OCID-VLG names its objects in its expressions; --objects is for Cornell roots")
        return OcidVlgDataset(root)
    if next(root.rglob("*_grasps.txt"), None) is not None:
        if objects is not None:
            raise ValueError("Jacquard carries object ids in its file names; --objects is for Cornell roots")
        return JacquardDataset(root)
    if next(root.rglob("pcd*cpos.txt"), None) is not None:
        return CornellDataset(root, objects=objects)
    raise FileNotFoundError(
        f"no grasp dataset under {root}: expected Cornell files (pcdNNNNr.png + pcdNNNNcpos.txt), "
        "Jacquard files (*_RGB.png + *_grasps.txt) or OCID-VLG's refer/<version>/test_expressions.json"
    )
