"""Regenerate docs/screenshot.svg: the app at 120×40, SR-IOV, after some steps.

    python scripts/screenshot.py [technique] [out.svg]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from iovtui.sim.preset import load_preset
from iovtui.ui.app import create_app

ROOT = Path(__file__).resolve().parent.parent


async def main(technique: str, out: Path) -> None:
    app = create_app(load_preset("steady-stream"), technique, seed=1, start_paused=True)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(120):
            await pilot.press("n")
        await pilot.pause(0.2)
        app.save_screenshot(filename=out.name, path=str(out.parent))
    print(out)


if __name__ == "__main__":
    tech = sys.argv[1] if len(sys.argv) > 1 else "sriov"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "screenshot.svg"
    asyncio.run(main(tech, out))
