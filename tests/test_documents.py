"""Document loading: every format, every encoding rule and every way a file can be bad.

Fixtures are built here, in tmp_path: PDFs are written by hand (pypdf cannot put text on a page), EPUBs with
ebooklib, so the repository holds no binary files.
"""

from __future__ import annotations

import codecs
import dataclasses
import html
import io
import random
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longread.documents import (
    DEFAULT_MAX_BYTES,
    SUPPORTED_EXTENSIONS,
    Document,
    EncodingFallbackWarning,
    as_document,
    find_documents,
    html_to_text,
    load_document,
)
from longread.errors import DocumentError

from .conftest import SHARED_DATA

BOOKS = SHARED_DATA / "books"
RUE_MORGUE = BOOKS / "murders_in_the_rue_morgue.txt"


# -- fixtures built in the test ---------------------------------------------------------------------------------------
def make_pdf(pages: list[list[str] | None], info: dict[str, str] | None = None) -> bytes:
    """A valid PDF with one text line per string, in Helvetica (a standard font, so no font file).

    A page given as None has an empty content stream: what a scanned, image-only page gives a text extractor.
    """
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages))), len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        operators = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines or []:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            operators.append(f"({escaped}) Tj T*")
        operators.append("ET")
        stream = "\n".join(operators).encode("latin-1") if lines else b""
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    trailer_info = b""
    if info:
        objects.append(("<< " + " ".join(f"/{key} ({value})" for key, value in info.items()) + " >>").encode())
        trailer_info = b" /Info %d 0 R" % len(objects)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (len(objects) + 1, trailer_info))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret")  # RC4: no extra package needed
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_epub(path: Path, chapters: list[tuple[str, str, str]], *, title="A Test Book", author="Ann Author"):
    """Write an EPUB whose spine follows `chapters` order: (file name, toc title, body XHTML)."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-book")
    book.set_title(title)
    book.set_language("en")
    book.add_author(author)
    items = []
    for file_name, toc_title, body in chapters:
        item = epub.EpubHtml(title=toc_title, file_name=file_name, lang="en")
        item.content = body
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epub.write_epub(str(path), book)
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", newline="")
    else:
        path.write_bytes(data)
    return path


def load_error(path, **kwargs) -> DocumentError:
    with pytest.raises(DocumentError) as caught:
        load_document(path, **kwargs)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)
    return caught.value


# -- each format ------------------------------------------------------------------------------------------------------
def test_a_text_file_loads_with_newlines_normalized_and_its_stem_as_title(tmp_path):
    path = write(tmp_path / "notes.txt", "first\r\nsecond\rthird\nfourth")

    doc = load_document(path)

    assert doc.text == "first\nsecond\nthird\nfourth"
    assert doc.title == "notes"
    assert doc.source == str(path)
    assert doc.metadata["encoding"] == "utf-8"


def test_markdown_title_is_the_first_level_one_heading_outside_code(tmp_path):
    text = "Intro line\n```\n# not a heading, a comment\n```\n## Subheading\n# The Real Title #\n\nBody.\n"
    doc = load_document(write(tmp_path / "guide.md", text))
    assert doc.title == "The Real Title"
    assert doc.text == text

    no_heading = load_document(write(tmp_path / "plain.markdown", "## only a subheading\ntext"))
    assert no_heading.title == "plain"


def test_html_keeps_visible_text_and_block_boundaries_and_drops_code_and_head(tmp_path):
    page = """<!DOCTYPE html><html><head><title>  The   Page Title </title>
    <style>body { color: red }</style><script>var hidden = "SCRIPT-TEXT";</script>
    <meta name="description" content="HEAD-TEXT"></head>
    <body><noscript>NOSCRIPT-TEXT</noscript><template><p>TEMPLATE-TEXT</p></template>
    <!-- COMMENT-TEXT -->
    <h1>Heading</h1><p>First   paragraph with <b>bold</b> and
    <a href="#">a link</a>.</p><p>Line one<br>Line two</p>
    <ul><li>apple</li><li>pear</li></ul>
    <div></div><div></div><div></div><p>After empty divs</p>
    <script>document.write("MORE-SCRIPT")</script></body></html>"""
    doc = load_document(write(tmp_path / "page.html", page))

    assert doc.title == "The Page Title"
    for hidden in ("SCRIPT-TEXT", "MORE-SCRIPT", "color: red", "HEAD-TEXT", "NOSCRIPT-TEXT", "TEMPLATE-TEXT",
                   "COMMENT-TEXT", "The   Page Title", "DOCTYPE"):
        assert hidden not in doc.text
    assert doc.text == (
        "Heading\n\nFirst paragraph with bold and a link.\n\nLine one\nLine two\n\napple\npear\n\nAfter empty divs"
    )
    assert doc.metadata["encoding"] == "utf-8"


def test_html_without_a_title_takes_the_file_stem_and_pre_keeps_its_spacing(tmp_path):
    doc = load_document(write(tmp_path / "code.htm", "<p>Example:</p><pre>a  =  1\n    b = 2</pre>"))
    assert doc.title == "code"
    assert doc.text == "Example:\n\na  =  1\n    b = 2"


def test_html_declared_charset_is_used_before_the_latin1_fallback(tmp_path):
    body = '<html><head><meta charset="windows-1252"></head><body><p>\u201cquoted\u201d caf\u00e9</p></body></html>'
    path = write(tmp_path / "old.html", body.encode("cp1252"))

    with warnings.catch_warnings():
        warnings.simplefilter("error", EncodingFallbackWarning)
        doc = load_document(path)

    assert doc.text == "\u201cquoted\u201d caf\u00e9"
    assert doc.metadata["encoding"] == "cp1252"


@given(paragraphs=st.lists(st.lists(st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1),
                                    min_size=1, max_size=5), min_size=1, max_size=5),
       secret=st.text(st.characters(categories=["L"]), min_size=8, max_size=12))
def test_html_to_text_gives_each_paragraph_on_its_own_and_never_script_text(paragraphs, secret):
    words = [[w for w in (" ".join(p)).split()] for p in paragraphs]
    page = "".join(f"<p>{html.escape(' '.join(p))}</p><script>'{secret}'</script>" for p in paragraphs)
    visible = html_to_text(page)
    assert visible == "\n\n".join(" ".join(w) for w in words if w)
    if secret not in " ".join(" ".join(p) for p in paragraphs):
        assert secret not in visible


def test_a_pdf_loads_its_pages_joined_by_blank_lines_with_its_metadata(tmp_path):
    data = make_pdf([["Hello (world)", "second line"], None, ["Page three"]],
                    info={"Title": "A PDF Title", "Author": "Pat Writer"})
    doc = load_document(write(tmp_path / "report.pdf", data))

    assert doc.text == "Hello (world)\nsecond line\n\nPage three"
    assert doc.title == "A PDF Title"
    assert doc.metadata["pages"] == 3
    assert doc.metadata["title"] == "A PDF Title"
    assert doc.metadata["author"] == "Pat Writer"


def test_a_pdf_without_metadata_is_titled_by_its_file_stem(tmp_path):
    doc = load_document(write(tmp_path / "untitled-scan.pdf", make_pdf([["Only text"]])))
    assert doc.title == "untitled-scan"
    assert "author" not in doc.metadata
    assert doc.metadata["pages"] == 1


def test_a_pdf_encrypted_with_an_empty_user_password_opens(tmp_path):
    data = encrypt_pdf(make_pdf([["Readable despite encryption"]]), user_password="")
    doc = load_document(write(tmp_path / "locked-for-editing.pdf", data))
    assert doc.text == "Readable despite encryption"


def test_an_epub_reads_chapters_in_spine_order_not_file_name_order(tmp_path):
    # File names sort as a, b, c; the spine says c, a, b.
    path = make_epub(tmp_path / "book.epub", [
        ("c_opening.xhtml", "TOC-ENTRY-ONE", "<h1>Opening</h1><p>It begins here.</p>"),
        ("a_middle.xhtml", "TOC-ENTRY-TWO", "<h1>Middle</h1><p>Then this.<br/>And this.</p>"),
        ("b_end.xhtml", "TOC-ENTRY-THREE", "<h1>End</h1><p>The last words.</p><script>NOT-TEXT</script>"),
    ], title="The Spine Wins", author="E. Pub")

    doc = load_document(path)

    assert doc.text == ("Opening\n\nIt begins here.\n\nMiddle\n\nThen this.\nAnd this.\n\n"
                        "End\n\nThe last words.")
    assert "TOC-ENTRY" not in doc.text  # the navigation document is a table of contents, not text
    assert doc.title == "The Spine Wins"
    assert doc.metadata["author"] == "E. Pub"
    assert doc.metadata["chapters"] == 3


def test_document_is_frozen_and_from_text_fills_the_defaults():
    doc = Document.from_text("Some text")
    assert (doc.text, doc.source, doc.title, doc.metadata) == ("Some text", "<text>", "untitled", {})
    assert Document.from_text("x", title="T", source="memo").title == "T"
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.text = "changed"  # type: ignore[misc]


# -- encodings --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("bom", "codec", "name"), [
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
])
def test_a_byte_order_mark_picks_the_encoding_and_is_stripped(tmp_path, bom, codec, name):
    path = write(tmp_path / "bom.txt", bom + "Gr\u00fc\u00dfe\r\n\u65e5\u672c".encode(codec))
    doc = load_document(path)
    assert doc.text == "Gr\u00fc\u00dfe\n\u65e5\u672c"
    assert doc.metadata["encoding"] == name


def test_bytes_that_are_not_utf8_fall_back_to_latin1_with_a_warning_naming_the_file(tmp_path):
    path = write(tmp_path / "legacy.txt", "caf\u00e9 na\u00efve\n".encode("latin-1"))

    with pytest.warns(EncodingFallbackWarning, match="legacy.txt") as record:
        doc = load_document(path)

    assert issubclass(record[0].category, UserWarning)
    assert doc.text == "caf\u00e9 na\u00efve\n"
    assert doc.metadata["encoding"] == "latin-1"


def test_valid_utf8_does_not_warn(tmp_path):
    path = write(tmp_path / "fine.txt", "caf\u00e9")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_document(path).text == "caf\u00e9"


_TEXT = st.text(st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="\ufeff") | st.sampled_from("\n\r\t"),
                min_size=1).filter(lambda t: t.strip())


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT, encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_any_text_round_trips_through_a_file_in_any_supported_encoding(tmp_path, text, encoding):
    path = write(tmp_path / "round.txt", text.encode(encoding))
    doc = load_document(path)
    assert doc.text == text.replace("\r\n", "\n").replace("\r", "\n")
    assert doc.metadata["encoding"] == encoding


# -- bad input: each error names the file and the reason -------------------------------------------------------------
def test_a_missing_file(tmp_path):
    assert "no such file" in load_error(tmp_path / "nowhere.txt").reason


def test_a_directory(tmp_path):
    assert "is a directory" in load_error(tmp_path).reason


def test_an_empty_file(tmp_path):
    assert "empty file (0 bytes)" in load_error(write(tmp_path / "empty.md", b"")).reason


@pytest.mark.parametrize(("name", "content"), [
    ("blank.txt", "  \n\t\n  "),
    ("scripts-only.html", "<html><head><title>T</title></head><body><script>x()</script> </body></html>"),
])
def test_a_file_with_no_text_after_extraction(tmp_path, name, content):
    assert "no extractable text" in load_error(write(tmp_path / name, content)).reason


def test_an_image_only_pdf_has_no_extractable_text(tmp_path):
    reason = load_error(write(tmp_path / "scan.pdf", make_pdf([None, None]))).reason
    assert "no extractable text" in reason
    assert "2 pages" in reason


def test_an_unsupported_extension_lists_the_supported_ones(tmp_path):
    reason = load_error(write(tmp_path / "letter.docx", b"PK\x03\x04")).reason
    assert "unsupported file type '.docx'" in reason
    for extension in SUPPORTED_EXTENSIONS:
        assert extension in reason


def test_a_file_over_the_size_limit_says_its_size_and_the_limit(tmp_path):
    path = write(tmp_path / "big.txt", "x" * 2048)
    reason = load_error(path, max_bytes=1000).reason
    assert "too large" in reason
    assert "2,048 bytes" in reason
    assert "1,000 bytes" in reason
    assert load_document(path, max_bytes=2048).text == "x" * 2048  # the limit itself is allowed
    assert DEFAULT_MAX_BYTES == 200 * 1024 * 1024


@pytest.mark.parametrize(("name", "data"), [
    ("nul.txt", b"text with a NUL\x00 byte in it"),
    ("controls.md", bytes(range(1, 9)) * 50 + b"some words"),
    ("image.html", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
])
def test_a_binary_file_with_a_text_extension(tmp_path, name, data):
    assert "binary file" in load_error(write(tmp_path / name, data)).reason


@pytest.mark.parametrize(("data", "label"), [
    (codecs.BOM_UTF8 + b"valid start \xff\xfe then invalid", "UTF-8"),
    (codecs.BOM_UTF16_LE + "odd length".encode("utf-16-le") + b"x", "UTF-16"),
])
def test_a_file_that_contradicts_its_byte_order_mark_is_undecodable(tmp_path, data, label):
    reason = load_error(write(tmp_path / "liar.txt", data)).reason
    assert f"undecodable: starts with a {label} byte order mark" in reason


@pytest.mark.parametrize("data", [
    b"%PDF-1.4 and then nothing a PDF needs",
    b"not a pdf at all",
    make_pdf([["some text"]])[:300],  # truncated
])
def test_a_corrupt_pdf(tmp_path, data):
    assert "corrupt PDF" in load_error(write(tmp_path / "broken.pdf", data)).reason


def test_a_corrupt_pdf_prints_nothing_besides_the_error(tmp_path):
    # pytest installs logging handlers, so only a fresh interpreter shows what a CLI user would see on stderr.
    path = write(tmp_path / "broken.pdf", b"%PDF-1.7\n\x00\xff garbage \x13\x37" * 20)
    script = ("import sys; from longread.documents import load_document; from longread.errors import DocumentError\n"
              "try: load_document(sys.argv[1])\nexcept DocumentError as e: print(e.reason)")
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert "corrupt PDF" in run.stdout
    assert run.stderr == ""


def test_an_encrypted_pdf_that_needs_a_password(tmp_path):
    data = encrypt_pdf(make_pdf([["secret text"]]), user_password="hunter2")
    reason = load_error(write(tmp_path / "locked.pdf", data)).reason
    assert "encrypted PDF" in reason
    assert "password" in reason


_CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
    "</rootfiles></container>"
)


def test_an_epub_that_is_not_a_zip(tmp_path):
    assert "corrupt EPUB (not a zip archive)" in load_error(write(tmp_path / "fake.epub", "just text")).reason


def test_an_epub_whose_container_names_a_missing_opf(tmp_path):
    path = tmp_path / "no-opf.epub"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr("META-INF/container.xml", _CONTAINER)
    reason = load_error(path).reason
    assert "corrupt EPUB" in reason
    assert "OPF" in reason


def test_an_epub_without_a_container_file(tmp_path):
    path = tmp_path / "no-container.epub"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
    assert "corrupt EPUB (missing META-INF/container.xml)" in load_error(path).reason


def test_an_epub_with_only_empty_chapters_has_no_extractable_text(tmp_path):
    path = make_epub(tmp_path / "hollow.epub", [("one.xhtml", "One", "<div><img src='x.png'/></div>")])
    assert "no extractable text" in load_error(path).reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), suffix=st.sampled_from([".pdf", ".epub"]))
def test_a_damaged_pdf_or_epub_gives_a_document_or_a_document_error_never_a_raw_exception(tmp_path, data, suffix):
    path = tmp_path / f"damaged{suffix}"
    if suffix == ".pdf":
        good = make_pdf([["damage me"], ["second page"]], info={"Title": "T"})
    else:
        good = make_epub(tmp_path / "good.epub", [("a.xhtml", "A", "<p>damage me</p>")]).read_bytes()
    damaged = bytearray(good)
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    for _ in range(data.draw(st.integers(1, 20))):
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    damaged = damaged[: data.draw(st.integers(1, len(damaged)))]
    path.write_bytes(bytes(damaged))
    try:
        doc = load_document(path)
    except DocumentError as error:
        assert error.path == str(path)
    else:
        assert doc.text.strip()


# -- find_documents ---------------------------------------------------------------------------------------------------
def test_find_documents_walks_a_folder_skipping_hidden_and_unsupported_files(tmp_path):
    for name in ["b.txt", "a.md", "sub/c.PDF", "sub/deeper/d.epub", "sub/e.html", "notes.docx", "image.png",
                 ".hidden.txt", ".git/objects/x.txt", "sub/.cache/y.md"]:
        write(tmp_path / name, "x")

    found = find_documents(tmp_path)

    assert found == sorted(found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.md", "b.txt", "sub/c.PDF", "sub/deeper/d.epub", "sub/e.html",
    ]


def test_find_documents_returns_a_file_whatever_its_extension(tmp_path):
    path = write(tmp_path / "letter.docx", "x")
    assert find_documents(path) == [path]
    assert find_documents(str(path)) == [path]


def test_find_documents_on_a_missing_path(tmp_path):
    with pytest.raises(DocumentError) as caught:
        find_documents(tmp_path / "gone")
    assert caught.value.path == str(tmp_path / "gone")
    assert "no such file" in caught.value.reason


def test_find_documents_on_an_empty_folder(tmp_path):
    assert find_documents(tmp_path) == []


# -- as_document ------------------------------------------------------------------------------------------------------
def test_as_document_passes_a_document_through():
    doc = Document.from_text("already loaded")
    assert as_document(doc) is doc


def test_as_document_loads_a_path_and_a_string_that_names_a_file(tmp_path):
    path = write(tmp_path / "story.txt", "Once upon a time.")
    assert as_document(path).source == str(path)
    from_str = as_document(str(path))
    assert (from_str.text, from_str.source, from_str.title) == ("Once upon a time.", str(path), "story")


def test_as_document_treats_a_missing_path_like_string_as_a_missing_file(tmp_path):
    missing = str(tmp_path / "missing" / "chapter.epub")
    with pytest.raises(DocumentError) as caught:
        as_document(missing)
    assert caught.value.path == missing
    assert "no such file" in caught.value.reason


@pytest.mark.parametrize("text", [
    "Call me Ishmael.",
    "Some years ago\nnever mind how long precisely: notes.txt",  # more than one line
    "x" * 4100 + ".txt",  # too long to be a path
    "Revenue rose.",  # short, but more than one word
])
def test_as_document_treats_other_strings_as_text(text):
    doc = as_document(text)
    assert (doc.text, doc.source, doc.title) == (text, "<text>", "untitled")


@pytest.mark.parametrize("name", ["chapter1", "report.docx", "notes/part-2"])
def test_a_one_word_string_that_names_no_file_is_an_error_not_a_document(name):
    # `longread.ask("chapter1", ...)` meant a file; reading the word itself would answer about nothing.
    with pytest.raises(DocumentError, match="no such file") as failed:
        as_document(name)
    assert failed.value.path == name and "Document.from_text" in failed.value.reason
    assert as_document(Document.from_text(name)).text == name  # the way to read such a string as text


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_as_document_rejects_empty_text(text):
    with pytest.raises(DocumentError) as caught:
        as_document(text)
    assert caught.value.path == "<text>"
    assert "empty document" in caught.value.reason


def test_as_document_rejects_other_types():
    with pytest.raises(TypeError):
        as_document(b"bytes are neither text nor a path")  # type: ignore[arg-type]


# -- a real book ------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not RUE_MORGUE.exists(), reason=f"shared data not present: {RUE_MORGUE}")
def test_a_real_book_loads_whole():
    doc = load_document(RUE_MORGUE)
    raw = RUE_MORGUE.read_bytes()
    expected = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    assert doc.text == expected
    assert doc.title == "murders_in_the_rue_morgue"
    assert doc.metadata["encoding"] in ("utf-8", "utf-8-sig")
    assert "Dupin" in doc.text


def test_a_format_is_one_record_its_loader_errors_naming_the_source(tmp_path):
    """A format added as a `Format` (what each built-in module declares): found by its extension, read with the
    name of its source, its title and metadata kept; its DocumentError names the file."""
    import codecs

    from longread.documents import LOADERS, Format, register_loader, supported_extensions

    def read(file: Path, source: str):
        data = file.read_bytes()
        if data.startswith(b"!"):
            raise DocumentError(source, "starts with a bang")
        return codecs.decode(data.decode(), "rot13"), "Rot13 title", {"rotated": 13}

    register_loader("rot13", Format("rot13", (".rot13",), read, content_types=("text/x-rot13",)))
    try:
        document = load_document(write(tmp_path / "a.rot13", "uryyb jbeyq"))
        assert (document.text, document.title) == ("hello world", "Rot13 title")
        assert document.metadata == {"format": "rot13", "bytes": 11, "rotated": 13}
        error = load_error(write(tmp_path / "b.rot13", "!uryyb"))
        assert error.reason == "starts with a bang" and error.path == str(tmp_path / "b.rot13")
    finally:
        LOADERS.unregister("rot13")
    assert ".rot13" not in supported_extensions()


@pytest.mark.parametrize("data, extension", [
    (b"%PDF-1.7 <html>", ".pdf"),  # magic bytes win over content that looks like another format
    (b"PK\x03\x04" + b"mimetypeapplication/epub+zip", ".epub"),
    (b"PK\x03\x04 a zip that is no book <html>", ".html"),
    (b"  <!DOCTYPE html><p>x", ".html"),
    (b"# A heading\n\nplain words", ".md"),
])
def test_bytes_without_a_name_are_recognised_by_magic_bytes_then_by_content(data, extension):
    from longread.documents.registry import sniff_extension

    assert sniff_extension(data) == extension
