"""The bot's own sentences in the asker's language: a typed message table, ``say`` and the choice of language.

Every sentence peekbot writes itself (placeholders, queue position, refusals, errors, help, command replies, the
notes under an answer) is a key of :data:`CATALOGUE` with one text per language; named placeholders
(``{position}``) are filled by ``say``. The English text is the one peekbot has always shown.

The language of a reply (:func:`lang_for`) is the asker's platform locale where the adapter knows it
(``IncomingMessage.locale``, e.g. ``zh-CN``; any ``zh`` locale gets the Simplified Chinese texts), else the
question's own language: Chinese when its Chinese characters outnumber its Latin words, else English. The model's
answer follows the question by itself.

A plain table instead of gettext catalogues: two languages, no compile step, and a test checks that every key has
every language with the same placeholders (add a language by adding it to ``Lang`` and a text to each entry).

Example::

    lang = lang_for(message)
    await reply.fail(say("access.dm_only", lang))
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, cast, get_args

from bot.i18n_admin import ADMIN_CATALOGUE
from bot.i18n_media import MEDIA_CATALOGUE

if TYPE_CHECKING:
    from bot.types import IncomingMessage

__all__ = [
    "CATALOGUE", "LANGS", "Lang", "Note", "Said", "lang_for", "lang_of_locale", "lang_of_text", "note", "placeholders",
    "said", "say",
]

Lang = Literal["en", "zh"]
"""The languages of the catalogue: English and Simplified Chinese."""
LANGS: Final[tuple[Lang, ...]] = get_args(Lang)
DEFAULT_LANG: Final[Lang] = "en"

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")

CATALOGUE: Final[dict[str, dict[Lang, str]]] = {
    # progress (adapters.kit.text)
    "progress.looking": {"en": "Looking at it…", "zh": "正在查看…"},
    "progress.queued_one": {"en": "Queued — 1 question ahead of yours.", "zh": "排队中 — 前面还有 1 个问题。"},
    "progress.queued_many": {
        "en": "Queued — {position} questions ahead of yours.",
        "zh": "排队中 — 前面还有 {position} 个问题。",
    },
    # final answers (adapters.kit.replies, adapters.kit.longanswers)
    "answer.none": {"en": "(no answer)", "zh": "（没有回答）"},
    "answer.empty": {"en": "(The model gave an empty answer.)", "zh": "（模型给出了空的回答。）"},
    "answer.in_file": {
        "en": "The full answer ({length:,} characters) is in the file {name} below.",
        "zh": "完整的回答（{length:,} 个字符）在下面的文件 {name} 中。",
    },
    # downloads (adapters.slack.files, adapters.feishu.adapter)
    "file.too_large": {"en": "“{name}” is {size}; the limit is {limit}.", "zh": "“{name}”有 {size}；上限为 {limit}。"},
    "file.over_limit": {"en": "“{name}” is larger than the limit of {limit}.", "zh": "“{name}”超过了 {limit} 的上限。"},
    "feishu.unsupported": {
        "en": "I can't read {name}. Send me a screenshot, photo or PDF (as an image or a file) with your question.",
        "zh": "我无法读取 {name}。请发送截图、照片或 PDF（图片或文件均可）并附上你的问题。",
    },
    "feishu.offline": {
        "en": "I couldn't download “{name}” because I'm not connected to Feishu right now.",
        "zh": "我现在没有连接到飞书，所以无法下载“{name}”。",
    },
    "feishu.not_allowed": {
        "en": "I'm not allowed to download “{name}”. Make sure I'm a member of this chat and that my app "
        "has the im:resource permission.",
        "zh": "我没有权限下载“{name}”。请确认我是这个群的成员，并且我的应用有 im:resource 权限。",
    },
    "feishu.download_failed": {
        "en": "I couldn't download “{name}” from Feishu ({reason}). Please send it again.",
        "zh": "我无法从飞书下载“{name}”（{reason}）。请重新发送。",
    },
    "slack.access_denied": {
        "en": "I can't open the file{named}: Slack did not let me download it. Please invite me to this channel "
        "(type `/invite @peekbot`) and make sure the app has the `files:read` permission, then send the file again.",
        "zh": "我无法打开文件{named}：Slack 不允许我下载它。请邀请我加入这个频道（输入 `/invite @peekbot`），"
        "并确认应用有 `files:read` 权限，然后重新发送文件。",
    },
    "slack.outside": {
        "en": "I can't open files stored outside Slack, and the file{named} is one. Please upload the file itself "
        "to Slack (not a link to it or a file from another service) and ask again.",
        "zh": "我无法打开存放在 Slack 之外的文件，而文件{named}就是这样。请把文件本身上传到 Slack"
        "（不是链接，也不是其他服务中的文件），然后再问一次。",
    },
    "slack.unsafe": {
        "en": "I couldn't download the file{named} safely: {why}. Please upload it to Slack again, or send a "
        "screenshot instead.",
        "zh": "我无法安全地下载文件{named}：{why}。请重新上传到 Slack，或改为发送截图。",
    },
    "slack.too_large": {
        "en": "The file{named} is {size}; the limit is {limit}. "
        "Please send a smaller file or a screenshot of the part that matters.",
        "zh": "文件{named}有 {size}；上限为 {limit}。请发送更小的文件，或重要部分的截图。",
    },
    "slack.too_large_at_least": {
        "en": "The file{named} is over {limit}; the limit is {limit}. "
        "Please send a smaller file or a screenshot of the part that matters.",
        "zh": "文件{named}超过了 {limit}；上限为 {limit}。请发送更小的文件，或重要部分的截图。",
    },
    "slack.gone": {
        "en": "I can't open that file: Slack says it no longer exists.",
        "zh": "我无法打开这个文件：Slack 说它已经不存在了。",
    },
    # where an answer looked (bot.library)
    "library.read_so_far": {
        "en": "I've read {done} of {document} so far; ask again to search more.",
        "zh": "我目前已读了 {document} 中的 {done} 张；再问一次可以搜索更多。",
    },
    "library.indexed_so_far": {
        "en": "I've indexed {done} of {total} pages of {document} so far; ask again to search more.",
        "zh": "我目前已为 {document} 的 {total} 页中的 {done} 页建立索引；再问一次可以搜索更多。",
    },
    "library.first_pages": {
        "en": "I search only the first {searchable} of {total} pages of {document}.",
        "zh": "我只搜索 {document} 共 {total} 页中的前 {searchable} 页。",
    },
    "used.mixed": {"en": "Used {places}.", "zh": "参考了{places}。"},
    "used.pages": {"en": "Pages used: {places}.", "zh": "参考的页面：{places}。"},
    "used.images": {"en": "Images used: {places}.", "zh": "参考的图片：{places}。"},
    "used.parts": {"en": "Parts used: {places}.", "zh": "参考的部分：{places}。"},
    "used.sources": {"en": "Sources used: {places}.", "zh": "参考来源：{places}。"},
    "used.place": {"en": "{numbers} of {document}", "zh": "{document} 的 {numbers}"},
    "used.separator": {"en": ", ", "zh": "、"},
    "used.groups": {"en": "; ", "zh": "；"},
    "unit.page": {"en": "page {numbers}", "zh": "第 {numbers} 页"},
    "unit.pages": {"en": "pages {numbers}", "zh": "第 {numbers} 页"},
    "unit.image": {"en": "image {numbers}", "zh": "第 {numbers} 张图片"},
    "unit.images": {"en": "images {numbers}", "zh": "第 {numbers} 张图片"},
    "unit.part": {"en": "part {numbers}", "zh": "第 {numbers} 部分"},
    "unit.parts": {"en": "parts {numbers}", "zh": "第 {numbers} 部分"},
    # access (bot.access)
    "access.workspace": {
        "en": "Sorry, this {word} isn't set up for peekbot. Please ask {contact} to enable it.",
        "zh": "抱歉，这个{word}还没有开通 peekbot。请联系{contact}开通。",
    },
    "access.org": {
        "en": "Sorry, I only answer people from the {word}s I'm set up for, and yours isn't one of them. "
        "Please ask {contact} if you need access.",
        "zh": "抱歉，我只回答已开通的{word}中的成员，你所在的{word}不在其中。如需使用，请联系{contact}。",
    },
    "access.user": {
        "en": "Sorry, you're not on the list of people who can use peekbot here. Please ask {contact} for access.",
        "zh": "抱歉，你不在这里可以使用 peekbot 的名单上。请联系{contact}开通权限。",
    },
    "access.channel": {
        "en": "I'm not set up to answer in this channel. Send me a direct message instead, "
        "or ask {contact} to enable me here.",
        "zh": "我没有在这个频道开通回答。请改为私信我，或请{contact}在这里开通。",
    },
    "access.dm_only": {
        "en": "I only answer in direct messages here — send me a DM.",
        "zh": "我在这里只回答私信 — 请私信我。",
    },
    "access.mention_only": {"en": "Mention me to ask me something here.", "zh": "在这里提问请 @ 我。"},
    "access.contact": {"en": "the people who run peekbot", "zh": "peekbot 的管理员"},
    "access.word_workspace": {"en": "workspace", "zh": "工作区"},
    "access.word_organization": {"en": "organization", "zh": "组织"},
    # rate limits and quotas (bot.ratelimit)
    "limit.rate": {
        "en": "You're asking faster than I can keep up — please wait about {wait} and ask again.",
        "zh": "你提问的速度太快了 — 请等大约 {wait}后再问。",
    },
    "limit.quota_one": {
        "en": "You've used today's {quota} question. Your quota resets at midnight (in about {wait}).",
        "zh": "你已用完今天的 {quota} 个问题额度。额度在午夜重置（大约 {wait}后）。",
    },
    "limit.quota_many": {
        "en": "You've used today's {quota} questions. Your quota resets at midnight (in about {wait}).",
        "zh": "你已用完今天的 {quota} 个问题额度。额度在午夜重置（大约 {wait}后）。",
    },
    "time.a_second": {"en": "a second", "zh": "1 秒"},
    "time.seconds": {"en": "{n} seconds", "zh": "{n} 秒"},
    "time.a_minute": {"en": "a minute", "zh": "1 分钟"},
    "time.minutes": {"en": "{n} minutes", "zh": "{n} 分钟"},
    "time.an_hour": {"en": "an hour", "zh": "1 小时"},
    "time.hours": {"en": "{n} hours", "zh": "{n} 小时"},
    # the application (bot.app)
    "app.paused": {
        "en": "I'm down for a short maintenance and will be back soon. Please ask again in a little while.",
        "zh": "我正在短暂维护，很快回来。请稍后再问。",
    },
    "app.stalled": {
        "en": "Sorry, this question made me stall, so I restarted. Please rephrase it or send a smaller file.",
        "zh": "抱歉，这个问题让我卡住了，所以我重启了。请换个说法，或发送更小的文件。",
    },
    "app.internal": {
        "en": "Sorry, something went wrong on my side. Please try again; if it keeps happening, tell an admin "
        "(reference {reference}).",
        "zh": "抱歉，我这边出了问题。请再试一次；如果一直这样，请告诉管理员（编号 {reference}）。",
    },
    "app.unknown_command": {
        "en": "I don't know the command /{name}. Type /help to see what I can do.",
        "zh": "我不认识命令 /{name}。输入 /help 查看我能做什么。",
    },
    "app.admin_only": {
        "en": "Sorry, /{name} is for peekbot admins only.",
        "zh": "抱歉，/{name} 仅限 peekbot 管理员使用。",
    },
    "app.command_failed": {
        "en": "Sorry, /{name} failed on my side. The logs have the details.",
        "zh": "抱歉，/{name} 在我这边执行失败了。详情见日志。",
    },
    "app.gave_up": {
        "en": "Sorry, I was interrupted {attempts} times while answering this (I restarted), so I've stopped "
        "trying. Please ask again; if it keeps happening, tell an admin.",
        "zh": "抱歉，回答这个问题时我被中断了 {attempts} 次（我重启了），所以不再尝试。"
        "请再问一次；如果一直这样，请告诉管理员。",
    },
    # answer buttons' labels (adapters.slack.buttons, adapters.feishu.buttons)
    "button.stop": {"en": "Stop", "zh": "停止"},
    "slack.status_looking": {"en": "is looking at it…", "zh": "正在查看…"},
    "button.helpful": {"en": "This answer helped", "zh": "这个回答有帮助"},
    "button.not_helpful": {"en": "This answer did not help", "zh": "这个回答没有帮助"},
    # per-channel instructions (bot.instructions)
    "instructions.usage": {
        "en": 'Usage: /instructions set <text> — what I should keep in mind in this channel, e.g. "answer in '
        'Japanese"; /instructions show; /instructions clear.',
        "zh": "用法：/instructions set <文字> — 我在这个频道要记住的内容，例如“用日语回答”；"
        "/instructions show；/instructions clear。",
    },
    "instructions.set_empty": {
        "en": "Please put the instructions after `set`, e.g. /instructions set answer in Japanese.",
        "zh": "请把说明写在 `set` 后面，例如 /instructions set 用日语回答。",
    },
    "instructions.too_long": {
        "en": "Those instructions are {length:,} characters long; the limit is {limit:,}. "
        "Please shorten them and try again.",
        "zh": "这段说明有 {length:,} 个字符；上限为 {limit:,}。请缩短后再试。",
    },
    "instructions.set": {
        "en": "Done: every question in this channel now comes with these instructions ({length:,} characters). "
        "/instructions show shows them; /instructions clear removes them.",
        "zh": "好的：这个频道的每个问题现在都会带上这些说明（{length:,} 个字符）。"
        "/instructions show 查看；/instructions clear 删除。",
    },
    "instructions.nothing_to_clear": {
        "en": "This channel has no instructions to clear.",
        "zh": "这个频道没有可清除的说明。",
    },
    "instructions.cleared": {
        "en": "Cleared: questions in this channel get no extra instructions from now on.",
        "zh": "已清除：从现在起，这个频道的问题不再带额外说明。",
    },
    "instructions.none": {"en": "This channel has no instructions.", "zh": "这个频道没有说明。"},
    "instructions.show": {"en": "Instructions for this channel ({who}):", "zh": "这个频道的说明（{who}）："},
    "instructions.unknown": {"en": "I don't know /instructions {action}.", "zh": "我不认识 /instructions {action}。"},
    "instructions.unreadable": {
        "en": "Instructions for this channel: could not be read just now.",
        "zh": "这个频道的说明：暂时无法读取。",
    },
    "instructions.status": {"en": "Instructions for this channel: “{preview}”", "zh": "这个频道的说明：“{preview}”"},
    "instructions.status_admin": {
        "en": "Instructions for this channel ({who}): “{preview}”",
        "zh": "这个频道的说明（{who}）：“{preview}”",
    },
    "instructions.who": {"en": "set by {by} on {when}", "zh": "由 {by} 于 {when} 设置"},
    # answer buttons (bot.ratings, bot.stops)
    "rating.helpful": {"en": "Thanks — noted that this helped.", "zh": "谢谢 — 已记下这个回答有帮助。"},
    "rating.not_helpful": {"en": "Thanks — noted. What was wrong?", "zh": "谢谢 — 已记下。哪里不对？"},
    "rating.reason": {"en": "Thanks — noted what was wrong.", "zh": "谢谢 — 已记下问题所在。"},
    "rating.unknown": {
        "en": "Sorry, I can't find that answer any more, so I can't record a rating for it.",
        "zh": "抱歉，我找不到这个回答了，所以无法记录评价。",
    },
    "rating.not_an_answer": {
        "en": "That message is not an answer I gave, so there is nothing to rate.",
        "zh": "这条消息不是我给出的回答，所以没有可评价的内容。",
    },
    "rating.not_finished": {"en": "Please rate this answer once it is complete.", "zh": "请在回答完成后再评价。"},
    "rating.too_fast": {
        "en": "You're rating faster than I can keep up — please wait about {wait} and try again.",
        "zh": "你评价得太快了 — 请等大约 {wait}后再试。",
    },
    "rating.what_was_wrong": {"en": "What was wrong?", "zh": "哪里不对？"},
    "rating.noted_reason": {"en": "Thanks, noted: {reason}.", "zh": "谢谢，已记下：{reason}。"},
    "reason.wrong": {"en": "It is wrong", "zh": "回答错误"},
    "reason.incomplete": {"en": "It is incomplete", "zh": "回答不完整"},
    "reason.missed_file": {"en": "It did not read the file", "zh": "没有读文件"},
    "reason.other": {"en": "Something else", "zh": "其他问题"},
    "stop.stopping": {"en": "Stopping — what was written so far stays.", "zh": "正在停止 — 已写出的内容会保留。"},
    "stop.complete": {"en": "This answer is already complete.", "zh": "这个回答已经完成了。"},
    "stop.not_yours": {
        "en": "Only the person who asked (or an admin) can stop this answer.",
        "zh": "只有提问的人（或管理员）可以停止这个回答。",
    },
    "stop.stopped_by": {"en": "(stopped by {name})", "zh": "（已由 {name} 停止）"},
    "stop.unknown": {"en": "Sorry, I can't find that answer any more.", "zh": "抱歉，我找不到这个回答了。"},
    # errors (bot.errors)
    "error.busy": {
        "en": "I'm busy right now: {depth} questions are waiting (the limit is {limit}). Please ask again in a minute.",
        "zh": "我现在很忙：有 {depth} 个问题在等待（上限为 {limit}）。请一分钟后再问。",
    },
    "error.timeout": {
        "en": "Sorry, answering took longer than {seconds:.0f} s, so I stopped. "
        "Please try a shorter question or a smaller image.",
        "zh": "抱歉，回答用时超过了 {seconds:.0f} 秒，所以我停止了。请试试更短的问题或更小的图片。",
    },
    "error.oom": {
        "en": "Sorry, the GPU ran out of memory on this question even after I shrank the images. "
        "Please send fewer or smaller images.",
        "zh": "抱歉，即使缩小了图片，这个问题仍让 GPU 内存不足。请发送更少或更小的图片。",
    },
    "error.cancelled": {"en": "This question was cancelled.", "zh": "这个问题已取消。"},
    "error.unavailable": {
        "en": "Sorry, I can't answer right now: {reason}.",
        "zh": "抱歉，我现在无法回答：{reason}。",
    },
    "error.not_running": {"en": "the model is not running", "zh": "模型没有在运行"},
    "error.too_many_pending_one": {
        "en": "You already have {limit} question waiting; I'll take more once some are answered.",
        "zh": "你已经有 {limit} 个问题在等待；等其中一些回答完后我再接受新的。",
    },
    "error.too_many_pending_many": {
        "en": "You already have {limit} questions waiting; I'll take more once some are answered.",
        "zh": "你已经有 {limit} 个问题在等待；等其中一些回答完后我再接受新的。",
    },
    "error.reply_gone": {"en": "Nobody reads this answer any more.", "zh": "已经没有人在看这个回答了。"},
    # media readers (bot.media)
    "media.image_damaged": {
        "en": "I couldn't read this image{named}: the file is damaged or not an image.",
        "zh": "我无法读取这张图片{named}：文件已损坏，或者不是图片。",
    },
    "media.image_too_large": {
        "en": "This image{named} is too large to open safely; the limit is {limit}.",
        "zh": "这张图片{named}太大，无法安全打开；上限为 {limit}。",
    },
    "media.image_pixels": {
        "en": "This image{named} is {size} pixels; the limit is {limit}.",
        "zh": "这张图片{named}有 {size} 像素；上限为 {limit}。",
    },
    "media.file_empty": {"en": "This file{named} is empty.", "zh": "这个文件{named}是空的。"},
    "media.file_too_large": {
        "en": "This file{named} is {size}; the limit is {limit}.",
        "zh": "这个文件{named}有 {size}；上限为 {limit}。",
    },
    "media.document_as_text": {
        "en": "This file{named} is a document to read as text.",
        "zh": "这个文件{named}是要按文本读取的文档。",
    },
    "media.not_a_document": {
        "en": "This file{named} is not a document I read as text.",
        "zh": "这个文件{named}不是我能按文本读取的文档。",
    },
    "media.pdf_encrypted": {
        "en": "This PDF{named} is password-protected; please send a copy without a password.",
        "zh": "这个 PDF{named}有密码保护；请发送一份没有密码的副本。",
    },
    "media.pdf_damaged": {
        "en": "I couldn't read this PDF{named}: the file is damaged or not a PDF.",
        "zh": "我无法读取这个 PDF{named}：文件已损坏，或者不是 PDF。",
    },
    "media.pdf_too_slow": {
        "en": "This PDF{named} took too long to draw. Please send a simpler file or a screenshot of the part you mean.",
        "zh": "这个 PDF{named}绘制用时太长。请发送更简单的文件，或你所指部分的截图。",
    },
    "media.pdf_too_heavy": {
        "en": "This PDF{named} has too much drawing in it to read. "
        "Please send a simpler file or a screenshot of the part you mean.",
        "zh": "这个 PDF{named}里的图形太多，无法读取。请发送更简单的文件，或你所指部分的截图。",
    },
    "media.pdf_no_page": {
        "en": "I couldn't draw any page of this PDF{named}.",
        "zh": "这个 PDF{named}我一页也画不出来。",
    },
    # questions (bot.questions)
    "question.too_long": {
        "en": "Your question is {length:,} characters long; the limit is {limit:,}.",
        "zh": "你的问题有 {length:,} 个字符；上限为 {limit:,}。",
    },
    "question.empty": {
        "en": "Send me a screenshot, photo, PDF or Office file with a question, or type /help.",
        "zh": "请发给我一张截图、照片、PDF 或 Office 文件并附上问题，或输入 /help。",
    },
    "question.first_images": {
        "en": "I looked at the first {limit} of {count} images.",
        "zh": "我只看了 {count} 张图片中的前 {limit} 张。",
    },
    "context.images_one": {"en": "{n} older image", "zh": "{n} 张较早的图片"},
    "context.images_many": {"en": "{n} older images", "zh": "{n} 张较早的图片"},
    "context.messages_one": {"en": "{n} earlier message", "zh": "{n} 条较早的消息"},
    "context.messages_many": {"en": "{n} earlier messages", "zh": "{n} 条较早的消息"},
    "context.and": {"en": " and ", "zh": "和"},
    "context.left_out": {
        "en": "I left out {parts} from this thread to stay within my limits.",
        "zh": "为了不超出我的限制，我略去了本话题中的{parts}。",
    },
    "status.reading_of": {"en": "reading {listed} of {document}…", "zh": "正在阅读 {document} 的 {listed}…"},
    "status.reading_numbered": {"en": "reading {listed} of {total}…", "zh": "正在阅读{listed}（共 {total}）…"},
    "status.reading_document": {"en": "reading the document…", "zh": "正在阅读文档…"},
    "status.looking_screenshot": {"en": "looking at the screenshot…", "zh": "正在查看截图…"},
    "status.looking_screenshots": {"en": "looking at the screenshots…", "zh": "正在查看截图…"},
    # commands (bot.commands)
    "help.intro": {
        "en": "I answer questions about screenshots, photos, PDFs, Word, Excel and PowerPoint files and text files. "
        "Send one with your question (in a channel, mention me). Follow-up questions in the same thread keep the "
        "context.",
        "zh": "我可以回答关于截图、照片、PDF、Word、Excel、PowerPoint 和文本文件的问题。发送文件并附上你的问题"
        "（在频道里请 @ 我）。同一话题中的追问会保留上下文。",
    },
    "help.commands": {"en": "Commands:", "zh": "命令："},
    "help.admin": {"en": " (admin)", "zh": "（管理员）"},
    "help.cmd.help": {"en": "what I can do and the commands", "zh": "我能做什么以及命令列表"},
    "help.cmd.status": {"en": "whether I'm up and how busy I am", "zh": "我是否在线以及有多忙"},
    "help.cmd.reset": {"en": "forget the earlier questions of this thread", "zh": "忘记本话题中之前的问题"},
    "help.cmd.pause": {
        "en": "maintenance mode: reply 'back soon' to new questions",
        "zh": "维护模式：对新问题回复“很快回来”",
    },
    "help.cmd.resume": {"en": "leave maintenance mode", "zh": "退出维护模式"},
    "help.cmd.reconnect": {
        "en": "force a fresh connection: /reconnect slack|feishu",
        "zh": "强制重新连接：/reconnect slack|feishu",
    },
    "help.cmd.cleanup": {
        "en": "free GPU and host memory now and report what was freed",
        "zh": "立即释放 GPU 和主机内存，并报告释放了多少",
    },
    "help.cmd.stats": {
        "en": "usage by day, channel and user: /stats [days]",
        "zh": "按天、频道和用户统计用量：/stats [天数]",
    },
    "help.cmd.instructions": {
        "en": "what I keep in mind in this channel: /instructions set <text> | show | clear",
        "zh": "我在这个频道要记住的说明：/instructions set <文字> | show | clear",
    },
    "status.state": {"en": "peekbot is {state}; up {uptime}.", "zh": "peekbot 状态：{state}；已运行 {uptime}。"},
    "status.queue": {
        "en": "Queue: {waiting} waiting, {running} being answered.",
        "zh": "队列：{waiting} 个等待中，{running} 个正在回答。",
    },
    "reset.done": {"en": "Done: I forgot this thread's earlier questions.", "zh": "好的：我已忘记本话题之前的问题。"},
    "reset.nothing": {"en": "There was nothing to forget here.", "zh": "这里没有需要忘记的内容。"},
    "pause.done": {
        "en": "Paused: new questions get a polite 'back soon' until an admin runs /resume "
        "(every replica, restarts too).",
        "zh": "已暂停：在管理员运行 /resume 之前，新问题都会收到“很快回来”的回复（所有副本，重启后依然有效）。",
    },
    "resume.done": {"en": "Resumed: I'm answering questions again.", "zh": "已恢复：我又开始回答问题了。"},
}
"""Every sentence peekbot writes itself: key → language → text with ``{named}`` placeholders."""
for _table in (MEDIA_CATALOGUE, ADMIN_CATALOGUE):  # kept apart only to keep each table short
    if CATALOGUE.keys() & _table.keys():
        raise KeyError(f"catalogue keys defined twice: {sorted(CATALOGUE.keys() & _table.keys())}")
    CATALOGUE.update(_table)


@dataclass(frozen=True, slots=True)
class Note:
    """A sentence or phrase of the catalogue said later, in the reader's language: its ``key`` and ``values``.

    Values are numbers, names, or Notes themselves (said in the same language, e.g. the file's "subject" phrase).
    Frozen and picklable: the media readers hand Notes back from their worker processes. Build one with
    :func:`note`; ``text(lang)`` says it.
    """

    key: str
    values: tuple[tuple[str, object], ...] = ()

    def text(self, lang: str = DEFAULT_LANG) -> str:
        return say(self.key, lang, **dict(self.values))

    def __str__(self) -> str:
        return self.text()


Said = str | Note
"""What a note or a label may be: a :class:`Note`, or a plain string (stored before notes had keys) shown as is."""


def note(key: str, /, **values: object) -> Note:
    """A :class:`Note` of catalogue ``key`` with ``values``."""
    return Note(key, tuple(values.items()))


def said(value: object, lang: str = DEFAULT_LANG) -> str:
    """``value`` in ``lang``: a Note said, anything else (a plain string, a number) as it is."""
    return str(_in(value, lang))


def say(key: str, lang: str = DEFAULT_LANG, /, **values: object) -> str:
    """The sentence ``key`` in ``lang`` (English for a language the catalogue lacks), ``values`` filled in (a
    :class:`Note` among them said in ``lang`` too).

    Raises ``KeyError`` for a key the catalogue lacks (a programming error, caught by the catalogue's test).
    """
    texts = CATALOGUE[key]
    template = texts.get(cast(Lang, lang)) or texts[DEFAULT_LANG]
    filled = {name: _in(value, lang) for name, value in values.items()}
    if lang != "zh":
        return template.format(**filled)
    pieces: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        pieces.append(literal)
        if name is not None:
            value = filled[name]
            value = repr(value) if conversion == "r" else str(value) if conversion == "s" else value
            pieces.append(format(value, spec or ""))
    return _spaced(pieces)


_LATIN_CHAR = re.compile(r"[A-Za-z0-9]")


def _spaced(pieces: list[str]) -> str:
    """Chinese text and its filled-in values joined with a space where a Chinese character meets a Latin letter or
    digit ("这个 Word 文档"), as Chinese typesetting does; spaces inside a value (a file name) are left alone."""
    text = ""
    for piece in pieces:
        if piece and text and _meet(text[-1], piece[0]):
            text += " "
        text += piece
    return text


def _meet(left: str, right: str) -> bool:
    """Whether a Chinese character and a Latin letter or digit meet between ``left`` and ``right``."""
    return bool((_HAN.match(left) and _LATIN_CHAR.match(right)) or (_LATIN_CHAR.match(left) and _HAN.match(right)))


def _in(value: object, lang: str) -> object:
    """A value to fill in: a Note said in ``lang``; numbers stay numbers (their format specs apply)."""
    return value.text(lang) if isinstance(value, Note) else value


def placeholders(template: str) -> set[str]:
    """The names of the ``{placeholders}`` in ``template``."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def lang_of_locale(locale: str) -> Lang | None:
    """``zh-CN``/``zh_TW``/``zh-Hans`` → ``zh``, ``en-US`` → ``en``; None for a language the catalogue lacks."""
    primary = locale.strip().replace("_", "-").split("-")[0].lower()
    return cast(Lang, primary) if primary in LANGS else None


def lang_of_text(text: str) -> Lang:
    """``zh`` when Chinese characters outnumber Latin words (and there is no Japanese kana), else ``en``."""
    han = len(_HAN.findall(text))
    if not han or _KANA.search(text):
        return "en"
    return "zh" if han >= len(_LATIN_WORD.findall(text)) else "en"


def lang_for(message: IncomingMessage) -> Lang:
    """The language of what peekbot says to ``message``'s author: their platform locale where the adapter knows it
    and the catalogue has it, else the language of the question's text."""
    return lang_of_locale(message.locale) or lang_of_text(message.text)
