"""Convert the newest XTuner checkpoint of a work dir to Hugging Face format.

    python finetune_convert.py WORK_DIR CONFIG SAVE_DIR [pth_to_hf options...]

Which checkpoint is newest is only known after training (mmengine writes its path to
`WORK_DIR/last_checkpoint`), so the job names the work dir and this resolves it, then becomes
`python -m xtuner.tools.model_converters.pth_to_hf CONFIG PTH SAVE_DIR ...`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def latest_checkpoint(work_dir: Path) -> Path | None:
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        named = Path(marker.read_text(encoding="utf-8").strip())
        # the work dir may have moved since (staging → published): keep the name, trust the folder
        candidate = work_dir / named.name
        if candidate.exists():
            return candidate
    return None


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    work_dir, config, save_dir, *rest = sys.argv[1:]
    pth = latest_checkpoint(Path(work_dir))
    if pth is None:
        print(f"ichain: no checkpoint in {work_dir} (no last_checkpoint file): did training finish?",
              file=sys.stderr)
        return 1
    print(f"ichain: converting {pth}", flush=True)
    argv = [sys.executable, "-m", "xtuner.tools.model_converters.pth_to_hf", config, str(pth), save_dir, *rest]
    os.execv(sys.executable, argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
