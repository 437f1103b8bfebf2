"""The media service: TeamTalk's HTTP picture store (msfs), tus resumable uploads,
downloads and links, on the content store. Routes: ``routes.py``."""
