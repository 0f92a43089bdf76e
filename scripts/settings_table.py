"""Print the settings table of the README from the one schema (`serverless_pool.settings`).

python scripts/settings_table.py
"""

from __future__ import annotations

from serverless_pool.settings import SCHEMA, Setting


def default_text(setting: Setting) -> str:
    if setting.default_doc:
        return setting.default_doc
    value = setting.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_table() -> str:
    lines = [
        "| setting | environment variable | default | what it does |",
        "|---|---|---|---|",
    ]
    for setting in SCHEMA:
        lines.append(
            f"| `{setting.name}` | `{setting.env_var}` | {default_text(setting)} | {setting.doc} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table())
