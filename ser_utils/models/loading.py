"""The one loader of a model folder: :func:`load_deployable` picks the model class from the format the
folder's config names (above every model class, so that none of them imports it)."""

from __future__ import annotations

from pathlib import Path

from ..core.config import SettingError
from .deployable import Deployable, ModelLoadError
from .folder import CONFIG_NAME, folder_format, read_json


def load_deployable(directory: str | Path, device: str | None = None, *, allow_pickle: bool = False) -> Deployable:
    """The model in a folder, by the format its config names (:class:`ModelLoadError` naming it otherwise).

    Folders of every earlier layout load: ``ser_utils.EmotionClassifier/1`` and ``/2``,
    ``ser_utils.FrozenEncoderModel/1``, baselines with ``pipeline.skops`` (or a legacy ``pipeline.joblib``
    with ``allow_pickle``).
    """
    from ..core.device import default_device
    from . import baseline, classifier, frozen  # here: torch and scikit-learn load only for a model

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ModelLoadError(f"{directory}: a file, not a model directory (give the folder that holds "
                             f"{CONFIG_NAME}, or config.json + pipeline.skops)")
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: no such model directory")
    if (directory / CONFIG_NAME).is_file():
        kind = folder_format(directory)
        if kind in frozen.FORMATS:
            return frozen.FrozenEncoderModel.from_pretrained(directory, device)  # ValueError naming the folder
        if kind in classifier.FORMATS:
            return classifier.EmotionClassifier.from_pretrained(directory).to(device or default_device())
        try:
            read_json(directory / CONFIG_NAME)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{directory}: unreadable {CONFIG_NAME} ({err})") from err
        raise ModelLoadError(f"{directory}: {CONFIG_NAME} has format {kind!r}, this code reads "
                             f"{', '.join(classifier.FORMATS + frozen.FORMATS)}: export the model again")
    if baseline.is_baseline_folder(directory):
        try:
            return baseline.BaselineModel.from_pretrained(directory, allow_pickle=allow_pickle)
        except SettingError:
            raise  # a pickle refused: the caller's setting, named as such
        except (OSError, KeyError, ValueError, EOFError) as err:
            raise ModelLoadError(f"not a usable baseline model: {err}") from err
        except Exception as err:  # an allowed pickle can raise anything while it is unpickled
            raise ModelLoadError(f"{directory}: not a usable baseline model ({type(err).__name__}: {err})") from err
    raise ModelLoadError(f"{directory}: not a model directory (expected {CONFIG_NAME} of a trained encoder, "
                         "or config.json + pipeline.skops of a baseline)")
