"""An import-linter contract that names what a package may import, not what it may not.

``forbidden`` contracts list names to keep out, and a new dependency passes them until it is
listed too. ``allowed_imports`` turns that round: the source package imports the standard
library, itself and ``allowed_modules`` (top-level names), nothing else, so an HTTP client or a
database driver added to ``streams/`` breaks the contract until someone decides it belongs
there. (What the allowed project packages import in turn is their own contracts' business.)
Registered in pyproject.toml (``contract_types``); lint-imports puts the checkout on sys.path.
"""

from __future__ import annotations

import sys

import grimp
from importlinter import Contract, ContractCheck, fields, output


class AllowedImportsContract(Contract):
    type_name = "allowed_imports"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        allowed = set(sys.stdlib_module_names) | set(self.allowed_modules)  # type: ignore[call-overload]
        broken = []
        for source in self.source_modules:  # type: ignore[attr-defined]
            package = source.name.split(".")[0]
            for importer in sorted({source.name} | graph.find_descendants(source.name)):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    top = imported.split(".")[0]
                    if top in allowed or top == package:
                        continue
                    lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer,
                                                                                       imported=imported))
                    broken.append((importer, imported, lines))
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, imported, lines in check.metadata["broken"]:
            output.print_error(f"{importer} imports {imported} (l. {', '.join(map(str, lines))}), which is not allowed")
            output.new_line()
