"""The media readers' sentences for ``bot.i18n``: notes under an answer, part labels, file kinds and refusals.

Part of :data:`bot.i18n.CATALOGUE` (merged there); kept apart only to keep each table short. Phrases (``kind.*``,
``subject.*``, ``label.*``) are filled into sentences as :class:`bot.i18n.Note` values, said in the same language.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from bot.i18n import Lang

MEDIA_CATALOGUE: Final[dict[str, dict[Lang, str]]] = {
    # what a file is (bot.media.office, text_files, files, pool)
    "kind.word": {"en": "Word document", "zh": "Word 文档"},
    "kind.excel": {"en": "Excel workbook", "zh": "Excel 工作簿"},
    "kind.powerpoint": {"en": "PowerPoint presentation", "zh": "PowerPoint 演示文稿"},
    "kind.office": {"en": "Office file", "zh": "Office 文件"},
    "kind.csv": {"en": "CSV file", "zh": "CSV 文件"},
    "kind.html": {"en": "web page", "zh": "网页"},
    "kind.markdown": {"en": "Markdown file", "zh": "Markdown 文件"},
    "kind.text": {"en": "text file", "zh": "文本文件"},
    "kind.file": {"en": "file", "zh": "文件"},
    "kind.image": {"en": "image", "zh": "图片"},
    "kind.pdf": {"en": "PDF", "zh": "PDF"},
    # what an unsupported file looks like (bot.media.sniff)
    "looks.word": {"en": "a Word document", "zh": "Word 文档"},
    "looks.excel": {"en": "an Excel workbook", "zh": "Excel 工作簿"},
    "looks.powerpoint": {"en": "a PowerPoint presentation", "zh": "PowerPoint 演示文稿"},
    "looks.odt": {"en": "an OpenDocument text", "zh": "OpenDocument 文本"},
    "looks.ods": {"en": "an OpenDocument spreadsheet", "zh": "OpenDocument 电子表格"},
    "looks.odp": {"en": "an OpenDocument presentation", "zh": "OpenDocument 演示文稿"},
    "looks.zip": {"en": "a ZIP archive", "zh": "ZIP 压缩包"},
    "looks.old_office": {"en": "an old-style Office document", "zh": "旧版 Office 文档"},
    "looks.rar": {"en": "a RAR archive", "zh": "RAR 压缩包"},
    "looks.7z": {"en": "a 7-Zip archive", "zh": "7-Zip 压缩包"},
    "looks.gzip": {"en": "a gzip archive", "zh": "gzip 压缩包"},
    "looks.rtf": {"en": "an RTF document", "zh": "RTF 文档"},
    "looks.icon": {"en": "an icon file", "zh": "图标文件"},
    "looks.photoshop": {"en": "a Photoshop file", "zh": "Photoshop 文件"},
    "looks.avif": {"en": "an AVIF image", "zh": "AVIF 图片"},
    "looks.heic": {"en": "an HEIC photo", "zh": "HEIC 照片"},
    "looks.video": {"en": "a video", "zh": "视频"},
    "looks.svg": {"en": "an SVG drawing", "zh": "SVG 矢量图"},
    # how a note names the file (bot.media.wording.subject)
    "subject.named_image": {"en": "{name}", "zh": "图片“{name}”"},
    "subject.named_pdf": {"en": "{name}", "zh": "PDF“{name}”"},
    "subject.named_file": {"en": "{name}", "zh": "文件“{name}”"},
    "subject.image": {"en": "the image", "zh": "这张图片"},
    "subject.image_start": {"en": "The image", "zh": "这张图片"},
    "subject.pdf": {"en": "the PDF", "zh": "这个 PDF"},
    "subject.pdf_start": {"en": "The PDF", "zh": "这个 PDF"},
    "subject.file": {"en": "the file", "zh": "这个文件"},
    "subject.file_start": {"en": "The file", "zh": "这个文件"},
    "subject.document_start": {"en": "The document", "zh": "这个文档"},
    "subject.workbook_start": {"en": "The workbook", "zh": "这个工作簿"},
    "subject.workbook": {"en": "the workbook", "zh": "这个工作簿"},
    "subject.document": {"en": "the document", "zh": "这个文档"},
    "subject.image_set": {"en": "the {n} earlier images in this thread", "zh": "本话题中较早的 {n} 张图片"},
    # sizes (bot.media.wording)
    "unit.bytes": {"en": "{n} bytes", "zh": "{n} 字节"},
    "unit.megapixel": {"en": "{amount} megapixel", "zh": "{amount} 百万像素"},
    "unit.megapixels": {"en": "{amount} megapixels", "zh": "{amount} 百万像素"},
    # parts of a file, in its own terms (bot.media.office, text_files, parts)
    "label.slide": {"en": "slide {n}", "zh": "第 {n} 张幻灯片"},
    "label.sheet_rows": {"en": "sheet {sheet}, rows {first}–{last}", "zh": "工作表 {sheet} 的第 {first}–{last} 行"},
    "label.sheet_row": {"en": "sheet {sheet}, row {first}", "zh": "工作表 {sheet} 的第 {first} 行"},
    "label.rows": {"en": "rows {first}–{last}", "zh": "第 {first}–{last} 行"},
    "label.row": {"en": "row {first}", "zh": "第 {first} 行"},
    "label.lines": {"en": "lines {first}–{last}", "zh": "第 {first}–{last} 行"},
    "label.line": {"en": "line {first}", "zh": "第 {first} 行"},
    "label.section_piece": {
        "en": "section '{heading}' (part {index} of {count})",
        "zh": "“{heading}”一节（第 {index} 部分，共 {count} 部分）",
    },
    "label.section": {"en": "section '{heading}'", "zh": "“{heading}”一节"},
    "label.start_piece": {
        "en": "the start (part {index} of {count})",
        "zh": "开头（第 {index} 部分，共 {count} 部分）",
    },
    "label.start": {"en": "the start", "zh": "开头"},
    "label.its_start": {"en": "its start", "zh": "开头"},
    # notes under an answer (bot.media.images, pdf, parts, office, text_files; bot.library)
    "note.image_pages": {
        "en": "{subject} has several pages; I looked at the first.",
        "zh": "{subject}有多页；我只看了第一页。",
    },
    "note.image_animated": {
        "en": "{subject} is animated; I looked at its first frame.",
        "zh": "{subject}是动图；我只看了第一帧。",
    },
    "note.image_tall": {
        "en": "{subject} is very tall ({width}×{height} pixels), so I read it in {tiles} tiles.",
        "zh": "{subject}非常长（{width}×{height} 像素），所以我把它分成 {tiles} 块来读。",
    },
    "note.image_wide": {
        "en": "{subject} is very wide ({width}×{height} pixels), so I read it in {tiles} tiles.",
        "zh": "{subject}非常宽（{width}×{height} 像素），所以我把它分成 {tiles} 块来读。",
    },
    "note.image_scaled": {
        "en": "I scaled {subject} down from {width}×{height} to {new_width}×{new_height} pixels.",
        "zh": "我把{subject}从 {width}×{height} 缩小到了 {new_width}×{new_height} 像素。",
    },
    "note.pdf_page_read": {
        "en": "I read page {pages} of {total} in {subject}.",
        "zh": "{subject}共 {total} 页，我读了第 {pages} 页。",
    },
    "note.pdf_pages_read": {
        "en": "I read pages {pages} of {total} in {subject}.",
        "zh": "{subject}共 {total} 页，我读了第 {pages} 页。",
    },
    "note.pdf_page_unopened": {
        "en": "I couldn't open page {number} of {subject}, so I skipped it.",
        "zh": "我无法打开{subject}的第 {number} 页，所以跳过了它。",
    },
    "note.pdf_page_no_size": {
        "en": "Page {number} of {subject} has no size, so I skipped it.",
        "zh": "{subject}的第 {number} 页没有尺寸，所以我跳过了它。",
    },
    "note.pdf_page_too_thin": {
        "en": "Page {number} of {subject} is too long and thin to read, so I skipped it.",
        "zh": "{subject}的第 {number} 页太细长，无法读取，所以我跳过了它。",
    },
    "note.pdf_page_undrawn": {
        "en": "I couldn't draw page {number} of {subject}, so I skipped it.",
        "zh": "我无法绘制{subject}的第 {number} 页，所以跳过了它。",
    },
    "note.pdf_too_slow": {
        "en": "{subject} took too long to draw, so I stopped at page {page}.",
        "zh": "{subject}绘制用时太长，所以我停在了第 {page} 页。",
    },
    "note.pdf_too_heavy": {
        "en": "{subject} has too much drawing in it, so I stopped at page {page}.",
        "zh": "{subject}里的图形太多，所以我停在了第 {page} 页。",
    },
    "note.doc_longer": {
        "en": "{subject} is longer than I read: I read it up to {last}.",
        "zh": "{subject}比我读的更长：我读到了{last}。",
    },
    "note.doc_too_slow": {
        "en": "{subject} took too long to read, so I read it up to {last}.",
        "zh": "{subject}读取用时太长，所以我读到了{last}。",
    },
    "note.doc_beginning": {
        "en": "{subject} is long; I read its beginning.",
        "zh": "{subject}很长；我读了它的开头部分。",
    },
    "note.doc_up_to": {"en": "{subject} is long; I read it up to {last}.", "zh": "{subject}很长；我读到了{last}。"},
    "note.sheet_cells": {
        "en": "{subject} has more than {limit:,} cells; I read the first {limit:,}, "
        "up to row {row:,} of sheet {sheet}.",
        "zh": "{subject}有超过 {limit:,} 个单元格；我读了前 {limit:,} 个，读到工作表 {sheet} 的第 {row:,} 行。",
    },
    "note.csv_cells": {
        "en": "{subject} has more than {limit:,} cells; I read the first {rows:,} rows.",
        "zh": "{subject}有超过 {limit:,} 个单元格；我读了前 {rows:,} 行。",
    },
    # refusals of Office, text and other files (bot.media.packages, office, text_files, parts, files, pool, images)
    "media.office_encrypted": {
        "en": "This {what}{named} is password-protected, so I can't read it; please send a copy without a password.",
        "zh": "这个{what}{named}有密码保护，所以我无法读取；请发送一份没有密码的副本。",
    },
    "media.office_damaged": {
        "en": "I couldn't read this {what}{named}: the file is damaged.",
        "zh": "我无法读取这个{what}{named}：文件已损坏。",
    },
    "media.office_pieces": {
        "en": "This {what}{named} is made of more than {limit:,} pieces, which is more than I open. "
        "Please send a smaller file.",
        "zh": "这个{what}{named}由超过 {limit:,} 个部分组成，超出了我能打开的数量。请发送更小的文件。",
    },
    "media.office_unpacks": {
        "en": "This {what}{named} unpacks to {size}, more than the {limit} I open. Please send a smaller file.",
        "zh": "这个{what}{named}解压后有 {size}，超过了我能打开的 {limit}。请发送更小的文件。",
    },
    "media.office_unreadable": {
        "en": "I couldn't read this {what}{named}: the file is damaged or not really a {what}.",
        "zh": "我无法读取这个{what}{named}：文件已损坏，或者并不是真正的{what}。",
    },
    "media.doc_nothing": {
        "en": "I couldn't find anything to read in this {what}{named}.",
        "zh": "我在这个{what}{named}里没有找到可读的内容。",
    },
    "media.text_encoding": {
        "en": "I couldn't read this {what}{named}: its text is in no encoding I recognise.",
        "zh": "我无法读取这个{what}{named}：我识别不出它的文本编码。",
    },
    "media.supported": {
        "en": "I can read PNG, JPEG, WebP, GIF, BMP and TIFF images, PDF documents, Word, Excel and PowerPoint files "
        "(.docx, .xlsx, .pptx), and text files (.txt, .md, .csv, .html, logs and source code).",
        "zh": "我能读取 PNG、JPEG、WebP、GIF、BMP 和 TIFF 图片，PDF 文档，Word、Excel 和 PowerPoint 文件"
        "（.docx、.xlsx、.pptx），以及文本文件（.txt、.md、.csv、.html、日志和源代码）。",
    },
    "media.damaged_as": {
        "en": "I couldn't read this file{named}: it looks like {description}, but it is damaged. {supported}",
        "zh": "我无法读取这个文件{named}：它看起来是{description}，但已损坏。{supported}",
    },
    "media.old_office": {
        "en": "This file{named} is an old-style Office document (.doc, .xls or .ppt), which I can't read. "
        "Please save it as .docx, .xlsx or .pptx and send it again.",
        "zh": "这个文件{named}是旧版 Office 文档（.doc、.xls 或 .ppt），我无法读取。"
        "请另存为 .docx、.xlsx 或 .pptx 后重新发送。",
    },
    "media.looks_like": {
        "en": "This file{named} looks like {description}, which I can't read. {supported}",
        "zh": "这个文件{named}看起来是{description}，我无法读取。{supported}",
    },
    "media.unknown_kind": {
        "en": "I can't read this kind of file{named}. {supported}",
        "zh": "我无法读取这种文件{named}。{supported}",
    },
    "media.too_expensive": {
        "en": "This {what}{named} is too expensive to open: {why}. "
        "Please send a smaller or simpler file, or a screenshot of the part you mean.",
        "zh": "这个{what}{named}打开的代价太高：{why}。请发送更小或更简单的文件，或你所指部分的截图。",
    },
    "media.why_memory": {
        "en": "it needs more than the {limit} MB of memory I allow for one file",
        "zh": "它需要的内存超过了我为单个文件允许的 {limit} MB",
    },
    "media.why_time": {
        "en": "it takes longer than the {limit:g} s I allow for one file",
        "zh": "它用时超过了我为单个文件允许的 {limit:g} 秒",
    },
    "media.why_crash": {
        "en": "reading it crashed the process that opens files",
        "zh": "读取它让打开文件的进程崩溃了",
    },
    "media.image_memory": {
        "en": "This image{named} is {width}×{height} pixels; opening it would take about {needed} of memory, and the "
        "limit is {limit}. Please send a smaller image or a screenshot of the part you mean.",
        "zh": "这张图片{named}有 {width}×{height} 像素；打开它大约需要 {needed} 内存，而上限为 {limit}。"
        "请发送更小的图片，或你所指部分的截图。",
    },
    "media.image_thin": {
        "en": "This image{named} is {width}×{height} pixels, too long and thin to read. Please crop it or send it in "
        "parts.",
        "zh": "这张图片{named}有 {width}×{height} 像素，太细长，无法读取。请裁剪它，或分成几部分发送。",
    },
    "media.image_thin_tiles": {
        "en": "This image{named} is {width}×{height} pixels, too long and thin to read even in {tiles} pieces. "
        "Please crop it or send it in parts.",
        "zh": "这张图片{named}有 {width}×{height} 像素，即使分成 {tiles} 块也太细长，无法读取。"
        "请裁剪它，或分成几部分发送。",
    },
    "media.image_small": {
        "en": "This image{named} is only {width}×{height} pixels; I need at least {side} pixels on each side.",
        "zh": "这张图片{named}只有 {width}×{height} 像素；每条边至少需要 {side} 像素。",
    },
}
"""Key → language → text, merged into ``bot.i18n.CATALOGUE``."""
