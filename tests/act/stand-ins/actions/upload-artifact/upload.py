"""The upload-artifact stand-in: copy the matched files under $ACT_STANDIN_STATE/artifacts/<name>/."""

import glob
import hashlib
import os
import shutil
import sys
from pathlib import Path

name, if_no_files = os.environ["NAME"], os.environ["IF_NO_FILES"]
dest = Path(os.environ["ACT_STANDIN_STATE"]) / "artifacts" / name
if dest.exists() and os.environ["OVERWRITE"] != "true":
    sys.exit(f"::error::artifact {name} exists (overwrite: false)")
patterns = [line.strip() for line in os.environ["PATHS"].splitlines() if line.strip()]
if any(pattern.startswith("!") for pattern in patterns):
    sys.exit("::error::the stand-in does not support excludes")
matches = [Path(m).resolve() for pattern in patterns for m in glob.glob(pattern, recursive=True)]
files = sorted({f for m in matches for f in ([m] if m.is_file() else m.rglob("*")) if f.is_file()})
if not files:
    print(f"::{'error' if if_no_files == 'error' else 'warning'}::no files found for {name}")
    sys.exit(1 if if_no_files == "error" else 0)
root = Path(os.path.commonpath([m if m.is_dir() else m.parent for m in matches]))
shutil.rmtree(dest, ignore_errors=True)
for file in files:
    target = dest / file.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(file, target)
digest = hashlib.sha256("\n".join(str(f.relative_to(root)) for f in files).encode()).hexdigest()
with open(os.environ["GITHUB_OUTPUT"], "a") as out:
    out.write(f"artifact-id={len(files)}\nartifact-url={dest.as_uri()}\nartifact-digest={digest}\n")
print(f"uploaded {len(files)} file(s) from {root} to {dest}")
