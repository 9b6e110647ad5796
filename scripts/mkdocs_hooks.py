"""MkDocs hooks (mkdocs.yml ``hooks:``): the project's docstrings are reST-flavoured prose; the
API pages show ``:func:`name``` roles as plain code."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(<code>)~?")


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(r"\1", html)
