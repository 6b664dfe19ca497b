"""MkDocs hook of the docs site (mkdocs.yml ``hooks``): the docstrings cross-reference with Sphinx roles
(``:func:`make_agent```, ``:class:`~pixelrl.agents.AgentSpec```), which Markdown renders as the role's name followed
by the code. This drops the role and, as Sphinx does for ``~``, keeps only the last dotted part."""

import re

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc|const):<code>(~?)([^<]*)</code>")


def _code(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def strip_roles(html: str) -> str:
    return ROLE.sub(_code, html)


def on_page_content(html: str, **kwargs) -> str:
    return strip_roles(html)
