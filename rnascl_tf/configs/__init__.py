"""Every frozen config of the product, TensorFlow-free and validated once, in its constructor.

Entry points build these from their parsed flags (`rnascl_tf.cli`); the Python API takes them
directly (`rnascl_tf.api`). Library code only sees configs, never flags. A bad value raises a
`UserInputError` naming the flag, so entry points refuse it before any work starts. What a resumed
run must share is `fingerprint(...)` of its configs.

>>> from rnascl_tf.configs import RobustConfig
>>> RobustConfig(mode="trades", eps=8 / 255).step_size == 2 / 255
True
"""

from rnascl_tf.configs.common import check_pixels, fingerprint, fingerprint_differences
from rnascl_tf.configs.evaluation import (AUTOATTACK_MODES, DEFAULT_ATTACKS, DEFAULT_SWEEP, FAST_BUDGET,
                                          STANDARD_BUDGET, ArtBudget, EvalConfig)
from rnascl_tf.configs.method import (ARCHITECTURES, OBJECTIVES, RESOURCE_FORMS, TUTOR_MAPS, DistillConfig, Objective,
                                      RetrainConfig,
                                      SearchConfig, TeacherArchConfig, TeacherConfig)
from rnascl_tf.configs.training import (IMAGE_FOLDER_PREFIX, IMAGENETTE_PREFIX, MIXED_PRECISION, ROBUST_MODES,
                                        STRATEGIES, DataConfig, OptimConfig, RobustConfig, RunConfig,
                                        check_dataset_name)

__all__ = [
    "AUTOATTACK_MODES", "DEFAULT_ATTACKS", "DEFAULT_SWEEP", "FAST_BUDGET", "IMAGE_FOLDER_PREFIX", "IMAGENETTE_PREFIX",
    "ARCHITECTURES", "MIXED_PRECISION", "OBJECTIVES", "Objective", "RESOURCE_FORMS", "ROBUST_MODES", "STANDARD_BUDGET", "STRATEGIES", "TUTOR_MAPS",
    "ArtBudget",
    "DataConfig", "DistillConfig", "EvalConfig", "OptimConfig", "RetrainConfig", "RobustConfig", "RunConfig",
    "SearchConfig", "TeacherArchConfig", "TeacherConfig", "check_dataset_name", "check_pixels", "fingerprint", "fingerprint_differences",
]
