"""Typed, versioned records that the training chain hands over: plain arrays and JSON, no code.

Each record is a small dataclass that saves and loads in its own module:

| record | module | file |
|---|---|---|
| :class:`Teacher` | ``teacher.py`` | ``models/teachers/<version>.npz`` |
| :class:`Student` | ``student.py`` | ``models/students/<version>.npz`` |
| :class:`Report` | ``report.py`` | ``models/reports/<version>.json`` |
| :class:`Candidate` | ``candidate.py`` | an artifact (``models/artifacts/<version>.uart``) and its report |

A record's version is a hash of its content, so a record is written once and never changed: saving
the same content again finds the file there and leaves it. Readers name the version they want
(the upstream asset's materialization records it), never a "latest" file that another run may
overwrite. Arrays are read with ``numpy.load(allow_pickle=False)`` and JSON with ``json``: a
file planted under ``models/`` can hold data, never code.
"""

from .candidate import Candidate
from .report import Report
from .student import Student
from .teacher import Teacher

__all__ = ["Candidate", "Report", "Student", "Teacher"]
