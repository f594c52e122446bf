"""Run by the integration tests inside Label Studio's own environment (label-studio-sdk), against
a real server: import the tasks `selftrain export --format label-studio` wrote into a new
project, read their predictions back, review as a person would (the first task accepted with
its first box moved to x 10 %, y 20 %; the second skipped; the rest left), and export the
project as Label Studio's JSON.

usage: python label_studio_review.py URL TOKEN TASKS.json OUT.json
OUT.json: {"read_back": [{"image_id", "predictions": [{"score", "result"}]}], "export": [...]}
"""

import json
import sys

from label_studio_sdk import LabelStudio

url, token, tasks_file, out = sys.argv[1:5]
tasks = json.load(open(tasks_file))
classes = sorted(
    {c for t in tasks for p in t["predictions"] for r in p["result"] for c in r["value"]["rectanglelabels"]}
)
labels = "".join(f'<Label value="{c}"/>' for c in classes)
config = (
    '<View><Image name="image" value="$image"/>'
    f'<RectangleLabels name="label" toName="image">{labels}</RectangleLabels></View>'
)

ls = LabelStudio(base_url=url, api_key=token)
project = ls.projects.create(title="selftrain review", label_config=config)
ls.projects.import_tasks(id=project.id, request=tasks)
stored = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.data["image_id"])
read_back = [
    {"image_id": t.data["image_id"], "predictions": [{"score": p.score, "result": p.result} for p in t.predictions]}
    for t in stored
]
first = stored[0]
moved = [dict(r) for r in first.predictions[0].result][:1]
moved[0]["value"] = dict(moved[0]["value"], x=10.0, y=20.0)
ls.annotations.create(id=first.id, result=moved, was_cancelled=False)
ls.annotations.create(id=stored[1].id, result=[], was_cancelled=True)
export = b"".join(ls.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
with open(out, "w") as f:
    json.dump({"read_back": read_back, "export": json.loads(export)}, f)
