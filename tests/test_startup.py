"""Starting while Mattermost is down or misconfigured: wait out an outage, refuse a bad token."""

import pytest

from bot.chat import ChatError, MattermostChat, WriteQueue
from bot.config import MattermostConfig
from bot.runtime import Runtime


async def test_bot_waits_out_a_mattermost_outage_at_start(sandbox):
    settings = sandbox.settings()
    # Mattermost answers 503 to more calls than one start's retries cover.
    sandbox.mattermost.fail_next(4, status=503)
    chat = MattermostChat(settings.mattermost, queue=WriteQueue(backoff_base_s=0.01, max_attempts=2))
    runtime = Runtime(settings, chat=chat)
    await runtime.start()
    try:
        assert sandbox.mattermost.faults == []  # every injected 503 was met, then it got through
        assert chat.bot_user_id == sandbox.mattermost.user("sop-bot").id
    finally:
        await runtime.stop()


async def test_a_wrong_bot_token_stops_the_start_with_a_clear_error(sandbox):
    settings = sandbox.settings(mattermost=MattermostConfig(
        url=sandbox.mattermost_url, token="not-the-token", team="platform"))
    with pytest.raises(ChatError) as exc:
        await Runtime(settings).start()
    assert exc.value.status == 401
    assert "not-the-token" not in str(exc.value)
