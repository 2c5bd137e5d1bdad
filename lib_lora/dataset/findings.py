"""What the dataset report says: findings with a severity, what, where and what to do.

Severities: 'error' = some files or folders will not be trained at all;
'warning' = likely to hurt the LoRA; 'info' = worth a look. The report never
blocks training, whatever it finds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    severity: str
    code: str                 # stable key, e.g. 'too_small', for the tab and for tests
    what: str
    fix: str = ""
    paths: list[str] = field(default_factory=list)   # files or folders concerned (first few)
    count: int = 0            # how many files are concerned (may exceed len(paths))
    concept: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        where = ""
        if self.paths:
            more = f" and {self.count - len(self.paths)} more" if self.count > len(self.paths) else ""
            where = f" [{', '.join(self.paths)}{more}]"
        prefix = f"{self.concept}: " if self.concept else ""
        return f"{self.severity.upper():7} {prefix}{self.what}{where}" + (f"\n        -> {self.fix}" if self.fix else "")


MAX_PATHS = 5


def finding_for_files(severity: str, code: str, what: str, fix: str, files: list, concept: str = "") -> Finding:
    """A finding about a set of files, listing the first few by name."""
    names = [str(f) for f in files[:MAX_PATHS]]
    return Finding(severity, code, what, fix, names, len(files), concept)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))
