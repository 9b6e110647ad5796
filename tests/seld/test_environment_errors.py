"""The environment's errors told apart from the program's: a full disk, no permission, a
read-only file system, too many open files become one line naming the file; anything else is
left to keep its own message (a bug keeps its traceback)."""

from __future__ import annotations

import errno
import resource
import subprocess
import sys

import h5py
import pytest

from seld.fsutil import environment_problem


def test_a_full_device_is_no_space_left():
    with pytest.raises(OSError) as info:  # /dev/full fails every write with ENOSPC
        with open("/dev/full", "wb") as fh:
            fh.write(b"x" * 4096)
    assert info.value.errno == errno.ENOSPC
    assert environment_problem(info.value) == "no space left on the device"
    named = OSError(errno.ENOSPC, "No space left on device", "/ws/features/a.h5")
    assert environment_problem(named) == "/ws/features/a.h5: no space left on the device"


def test_hdf5_errors_are_read_from_their_message(tmp_path):
    with pytest.raises(OSError) as info:  # a directory is no HDF5 file: not the environment's
        h5py.File(tmp_path, "r")
    assert environment_problem(info.value) is None
    # HDF5 gives the errno of a failed write in its message only, as in this one
    written = OSError(
        "Can't write data (file write failed: time = Sun Dec  6 15:22:18 2026, filename = "
        "'/ws/x.h5', file descriptor = 3, errno = 28, error message = 'No space left on device')"
    )
    assert written.errno is None
    assert environment_problem(written) == "/ws/x.h5: no space left on the device"


def test_too_many_open_files_and_other_errors():
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))\n"
        "from seld.fsutil import environment_problem\n"
        "handles = []\n"
        "try:\n"
        "    while True: handles.append(open(sys.executable, 'rb'))\n"
        "except OSError as exc:\n"
        "    print(environment_problem(exc))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{sys.executable}: too many open files (raise `ulimit -n`)"
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 16  # this process is untouched
    with pytest.raises(OSError) as missing:
        open("/no/such/file")
    assert environment_problem(missing.value) is None  # bad input, not the environment
    assert environment_problem(ValueError("a bug")) is None
