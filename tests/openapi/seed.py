"""Seeds the tray of the user tests/openapi/run tests as, through POST /publish with the service
token, so the tray operations reach real notifications: prints the id of one to change
(PATCH /notifications/{id}) and of one with actions (one sent to the upstream, one that is
only recorded), and publishes a few more for the listings and counts."""

import json
import os
import sys
import urllib.request


def publish(base, notification):
    body = {"users": ["openapi-user"], "notification": notification}
    request = urllib.request.Request(
        base + "/publish",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": "Bearer " + os.environ["ST_SERVICE_TOKEN"],
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["ids"]["openapi-user"]


def main():
    base = sys.argv[1]
    for n in range(3):
        publish(base, {"title": f"Build {n} finished", "category": "builds", "collapse_key": "b"})
    publish(base, {"title": "Plain", "body": "text", "source": "ci", "data": {"n": 1}})
    change = publish(base, {"title": "Change me", "link": "/builds/1", "category": "deploys"})
    actions = publish(
        base,
        {
            "title": "Approve?",
            "actions": [
                {"id": "approve", "label": "Approve", "path": "/api/builds/1/approve"},
                {"id": "dismiss", "label": "Dismiss"},
            ],
        },
    )
    print(change, actions)


if __name__ == "__main__":
    main()
