"""Moving an existing TeamTalk deployment over: its MySQL database and Redis pools into
our store (``teamtalk-admin import-teamtalk``).

``source`` reads the reference (keyset pages, pipelined Redis reads), ``target`` writes
pages with their checkpoints, ``voice`` rebuilds voice messages from msfs, and ``run``
holds the phases, the mapping of each reference table and the final check.
"""

from teamtalk_py.importer.run import Importer, ImportOptions, ImportRefused, Report, run_import
from teamtalk_py.importer.source import SourceError

__all__ = ["ImportRefused", "ImportOptions", "Importer", "Report", "SourceError", "run_import"]
