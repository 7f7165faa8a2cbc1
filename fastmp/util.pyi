# The stdlib's multiprocessing.util, re-exported (see util.py).
from multiprocessing.util import *
from multiprocessing.util import (
    DEFAULT_LOGGING_FORMAT as DEFAULT_LOGGING_FORMAT,
    LOGGER_NAME as LOGGER_NAME,
    spawnv_passfds as spawnv_passfds,
)

__all__ = [
    "sub_debug", "debug", "info", "sub_warning", "get_logger", "log_to_stderr",
    "get_temp_dir", "register_after_fork", "is_exiting", "Finalize",
    "ForkAwareThreadLock", "ForkAwareLocal", "close_all_fds_except", "SUBDEBUG",
    "SUBWARNING",
]
