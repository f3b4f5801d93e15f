"""Admin command replies, engine and download failures, the "writing" status line, the terminal's file refusals and
button answers for ``bot.i18n``.

Part of :data:`bot.i18n.CATALOGUE` (merged there); kept apart only to keep each table short. Numbers and
identifiers (models, devices, channels, users, job names) are filled in as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from bot.i18n import Lang

ADMIN_CATALOGUE: Final[dict[str, dict[Lang, str]]] = {
    # /status (bot.commands, bot.report)
    "state.paused": {"en": "paused for maintenance", "zh": "维护中（已暂停）"},
    "state.stuck": {"en": "stuck (the model does not answer)", "zh": "卡住了（模型没有响应）"},
    "state.ready": {"en": "ready", "zh": "就绪"},
    "state.starting": {"en": "starting", "zh": "正在启动"},
    "time.seconds_ago": {"en": "{n:.0f} s ago", "zh": "{n:.0f} 秒前"},
    "time.ago": {"en": "{duration} ago", "zh": "{duration}前"},
    "status.model": {"en": "Model: {model} on {device}.", "zh": "模型：{model}，运行于 {device}。"},
    "status.questions": {
        "en": "Questions: {answered} answered, {failed} failed, {in_progress} in progress; engine requests: "
        "{outcomes}.",
        "zh": "问题：{answered} 个已回答，{failed} 个失败，{in_progress} 个进行中；引擎请求：{outcomes}。",
    },
    "status.none_yet": {"en": "none yet", "zh": "暂无"},
    "status.latency": {
        "en": "Latency (last hour): answers p50 {answer_p50}, p95 {answer_p95}; engine p50 {engine_p50}, "
        "p95 {engine_p95}; {tokens_per_s:.1f} tokens/s.",
        "zh": "延迟（最近一小时）：回答 p50 {answer_p50}，p95 {answer_p95}；引擎 p50 {engine_p50}，"
        "p95 {engine_p95}；每秒 {tokens_per_s:.1f} 个 token。",
    },
    "status.gpu": {
        "en": "GPU memory: allocated {allocated}, reserved {reserved}, fragmentation {fragmentation}.",
        "zh": "GPU 内存：已分配 {allocated}，已预留 {reserved}，碎片率 {fragmentation}。",
    },
    "status.no_gpu": {"en": "GPU memory: no GPU in use.", "zh": "GPU 内存：未使用 GPU。"},
    "status.host": {"en": "Host memory: RSS {rss}.", "zh": "主机内存：RSS {rss}。"},
    "status.image_cache": {
        "en": "Image cache: {used} of {budget} ({entries:.0f} held); hit rate {hit_rate}.",
        "zh": "图片缓存：{budget} 中已用 {used}（{entries:.0f} 项）；命中率 {hit_rate}。",
    },
    "status.worker_stuck": {
        "en": "Model worker: STUCK, it did not answer the last ping ({missed} missed).",
        "zh": "模型工作线程：卡住了，没有响应上一次探测（已错过 {missed} 次）。",
    },
    "status.worker_back": {
        "en": "Model worker: answers pings again ({missed} missed so far).",
        "zh": "模型工作线程：又能响应探测了（迄今错过 {missed} 次）。",
    },
    "status.connected": {"en": "connected", "zh": "已连接"},
    "status.connected_for": {"en": "connected for {duration}", "zh": "已连接 {duration}"},
    "status.disconnected": {"en": "DISCONNECTED", "zh": "已断开"},
    "status.disconnected_why": {"en": "DISCONNECTED ({detail})", "zh": "已断开（{detail}）"},
    "status.last_event": {"en": ", last event {age}", "zh": "，最近事件 {age}"},
    "status.forced": {"en": " ({count} by the watchdog)", "zh": "（其中 {count} 次由看门狗触发）"},
    "status.adapter": {
        "en": "{name}: {connected}, {reconnects} reconnects{forced}{age}.",
        "zh": "{name}：{connected}，重连 {reconnects} 次{forced}{age}。",
    },
    "status.jobs": {"en": "Scheduler jobs:", "zh": "定时任务："},
    "status.job_not_run": {
        "en": "• {name} (every {every:g} s): not run yet",
        "zh": "• {name}（每 {every:g} 秒）：尚未运行",
    },
    "status.job": {
        "en": "• {name} (every {every:g} s): {outcome} {when} in {took}{detail}{failures}",
        "zh": "• {name}（每 {every:g} 秒）：{when}{outcome}，用时 {took}{detail}{failures}",
    },
    "status.job_failures": {"en": "; {count} failures so far", "zh": "；迄今失败 {count} 次"},
    "status.no_scheduler": {"en": "Scheduler: not running.", "zh": "定时任务：没有运行。"},
    # /cleanup, /reconnect (bot.commands)
    "cleanup.no_scheduler": {
        "en": "The scheduler is not running, so there is no memory cleanup to run.",
        "zh": "定时任务没有运行，所以没有可执行的内存清理。",
    },
    "cleanup.done": {
        "en": "Memory cleanup done in {took}: {detail}.",
        "zh": "内存清理完成，用时 {took}：{detail}。",
    },
    "cleanup.other": {"en": "Memory cleanup {outcome}: {detail}.", "zh": "内存清理 {outcome}：{detail}。"},
    "cleanup.gpu": {
        "en": "GPU reserved {before} → {after} (freed {freed}; allocated {allocated}, "
        "fragmentation {fragmentation:.0%})",
        "zh": "GPU 预留内存 {before} → {after}（释放 {freed}；已分配 {allocated}，碎片率 {fragmentation:.0%}）",
    },
    "cleanup.emptied": {"en": "cache emptied: {reason}", "zh": "已清空缓存：{reason}"},
    "cleanup.kept": {"en": "cache kept: {reason}", "zh": "保留缓存：{reason}"},
    "cleanup.reason.no_cuda": {"en": "no CUDA memory to release", "zh": "没有可释放的 CUDA 内存"},
    "cleanup.reason.forced": {"en": "forced", "zh": "手动执行"},
    "cleanup.reason.fragmentation": {
        "en": "fragmentation {fragmentation:.2f} >= {threshold:.2f}",
        "zh": "碎片率 {fragmentation:.2f} ≥ {threshold:.2f}",
    },
    "cleanup.reason.unused": {
        "en": "unused reserved {unused_mib:.0f} MiB >= {threshold_mib:.0f} MiB",
        "zh": "未使用的预留内存 {unused_mib:.0f} MiB ≥ {threshold_mib:.0f} MiB",
    },
    "cleanup.reason.below": {"en": "below thresholds", "zh": "未达到阈值"},
    "cleanup.host": {
        "en": "host RSS {before} → {after} (freed {freed})",
        "zh": "主机内存 {before} → {after}（释放 {freed}）",
    },
    "cleanup.gc": {"en": "gc collected {count} objects", "zh": "垃圾回收了 {count} 个对象"},
    "cleanup.separator": {"en": "; ", "zh": "；"},
    "reconnect.unknown": {
        "en": "Unknown platform {name}. Connected platforms: {known}. Usage: /reconnect <platform>",
        "zh": "未知的平台 {name}。已连接的平台：{known}。用法：/reconnect <平台>",
    },
    "reconnect.none": {"en": "none", "zh": "无"},
    "reconnect.now": {"en": "Reconnecting {name} now.", "zh": "正在重新连接 {name}。"},
    # /stats (bot.commands, bot.ratings)
    "stats.usage": {
        "en": "Usage: /stats [days], with days from 1 to {limit}.",
        "zh": "用法：/stats [天数]，天数从 1 到 {limit}。",
    },
    "stats.nothing": {"en": "No questions in the last {days} days.", "zh": "最近 {days} 天没有问题。"},
    "stats.total": {
        "en": "Usage over the last {days} days: {total} questions, {failed} failed.",
        "zh": "最近 {days} 天的用量：{total} 个问题，{failed} 个失败。",
    },
    "stats.by_day": {"en": "By day (UTC):", "zh": "按天（UTC）："},
    "stats.day": {
        "en": "• {day}: {requests} questions, {failed} failed, {tokens:,} tokens",
        "zh": "• {day}：{requests} 个问题，{failed} 个失败，{tokens:,} 个 token",
    },
    "stats.top_channels": {"en": "Top channels:", "zh": "最活跃的频道："},
    "stats.top_users": {"en": "Top users:", "zh": "最活跃的用户："},
    "stats.audit": {
        "en": "Audit log, last {days} days (kept across restarts): {questions} questions — {outcomes}.",
        "zh": "审计日志，最近 {days} 天（重启后保留）：{questions} 个问题 — {outcomes}。",
    },
    "stats.latency": {"en": "Latency: mean {mean}, p95 {p95}.", "zh": "延迟：平均 {mean}，p95 {p95}。"},
    "stats.most_active": {"en": "Most active: {people}.", "zh": "最活跃：{people}。"},
    "stats.one_day": {"en": "{days} day", "zh": "{days} 天"},
    "stats.days": {"en": "{days} days", "zh": "{days} 天"},
    "stats.unrated": {"en": "Helpful: no answers rated ({period}).", "zh": "有帮助：没有回答被评价（{period}）。"},
    "stats.helpful": {
        "en": "Helpful: {percent} % of {rated} rated ({period}).",
        "zh": "有帮助：已评价的 {rated} 个回答中占 {percent} %（{period}）。",
    },
    # engine failures (inference)
    "engine.failed": {
        "en": "Sorry, something went wrong while I was answering. Please try again.",
        "zh": "抱歉，回答时出了问题。请再试一次。",
    },
    "engine.prepare_failed": {
        "en": "Sorry, I could not prepare the images of this question for the model.",
        "zh": "抱歉，我无法为模型准备这个问题的图片。",
    },
    "engine.shutting_down": {"en": "the bot is shutting down", "zh": "机器人正在关闭"},
    "engine.worker_stopped": {"en": "the model worker stopped", "zh": "模型工作线程已停止"},
    "remote.timeout": {
        "en": "Sorry, the model server did not answer in time.",
        "zh": "抱歉，模型服务器没有及时回答。",
    },
    "remote.broke": {
        "en": "Sorry, the connection to the model server broke in the middle of the answer. Please ask again.",
        "zh": "抱歉，回答到一半时与模型服务器的连接断了。请再问一次。",
    },
    "remote.unreachable": {
        "en": "the model server cannot be reached; please try again in a few minutes",
        "zh": "无法连接到模型服务器；请几分钟后再试",
    },
    "remote.unstable": {
        "en": "the connection to the model server keeps breaking; please try again soon",
        "zh": "与模型服务器的连接总是断开；请稍后再试",
    },
    "remote.moved": {
        "en": "the model server's address has moved, so an admin needs to check the bot's configuration",
        "zh": "模型服务器的地址变了，需要管理员检查机器人的配置",
    },
    "remote.key_refused": {
        "en": "the model server refused the bot's API key, so an admin needs to check the bot's configuration",
        "zh": "模型服务器拒绝了机器人的 API 密钥，需要管理员检查机器人的配置",
    },
    "remote.unknown_model": {
        "en": "the model server does not know the configured model, so an admin needs to check the bot's configuration",
        "zh": "模型服务器不认识配置的模型，需要管理员检查机器人的配置",
    },
    "remote.trouble": {
        "en": "the model server is having trouble; please try again in a few minutes",
        "zh": "模型服务器出了问题；请几分钟后再试",
    },
    "remote.rejected": {
        "en": "Sorry, the model server could not process this question.",
        "zh": "抱歉，模型服务器无法处理这个问题。",
    },
    "remote.stalled": {
        "en": "Sorry, the model server stopped sending the answer. Please ask again.",
        "zh": "抱歉，模型服务器停止发送回答了。请再问一次。",
    },
    "remote.failed": {
        "en": "Sorry, the model server failed while answering. Please ask again.",
        "zh": "抱歉，模型服务器在回答时出错了。请再问一次。",
    },
    "remote.busy": {
        "en": "Sorry, the model server is overloaded right now. Please ask again in a minute.",
        "zh": "抱歉，模型服务器现在负载过高。请一分钟后再问。",
    },
    "remote.too_long": {
        "en": "Sorry, this question with its images is too long for the model. "
        "Please send fewer or smaller images, or ask in a new thread.",
        "zh": "抱歉，这个问题连同图片对模型来说太长了。请发送更少或更小的图片，或在新话题中提问。",
    },
    "status.writing": {"en": "writing the answer…", "zh": "正在写回答…"},
    # downloads (adapters.slack.files)
    "slack.download_failed": {
        "en": "I couldn't download the file{named} from Slack. Please try again in a minute.",
        "zh": "我无法从 Slack 下载文件{named}。请一分钟后再试。",
    },
    "slack.download_refused": {
        "en": "Slack could not give me the file{named} right now (HTTP {status}). Please try again in a minute.",
        "zh": "Slack 现在无法给我文件{named}（HTTP {status}）。请一分钟后再试。",
    },
    # files named in the terminal (adapters.console)
    "console.too_large": {
        "en": "{name} is {size} MB; the limit is {limit} MB.",
        "zh": "{name} 有 {size} MB；上限为 {limit} MB。",
    },
    "console.no_file": {"en": "There is no file at {path}.", "zh": "找不到文件 {path}。"},
    # button presses (adapters.feishu.actions, adapters.slack.interactions)
    "press.unreadable": {
        "en": "Sorry, I couldn't read that button press. Please try again.",
        "zh": "抱歉，我无法识别这次按钮点击。请再试一次。",
    },
    "press.not_ready": {
        "en": "I'm just starting up. Please press the button again in a moment.",
        "zh": "我正在启动。请稍后再按一次按钮。",
    },
    "press.not_recorded": {
        "en": "Sorry, I couldn't record that just now. Please try again.",
        "zh": "抱歉，我刚才没能记录下来。请再试一次。",
    },
    "press.working": {"en": "Working on it…", "zh": "正在处理…"},
    "press.thanks": {"en": "Thanks!", "zh": "谢谢！"},
    "press.failed": {
        "en": "Sorry, that did not work. Please try again in a moment.",
        "zh": "抱歉，操作没有成功。请稍后再试。",
    },
}
"""Key → language → text, merged into ``bot.i18n.CATALOGUE``."""
