"""``python -m teamtalk_client``: the same as the ``teamtalk-client`` console script."""

from teamtalk_client.cli import main

main()
