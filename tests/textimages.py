"""Generated test images with burned-in text whose every word's position is known.

Two kinds, both drawn with PIL (Debian's DejaVu and Liberation TrueType fonts when installed,
plus PIL's built-in bitmap font):

- ultrasound-like: black frame, a fan-shaped speckle sector, text in the corners and along the
  bottom edge;
- screenshot-like: a viewer window with a title bar, side panels of text and an image viewport.

Each image carries the exact ink box of every planted word and whether the word identifies the
subject, so tests and benchmarks can measure recall and collateral damage without OCR guesswork.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILES = tuple(
    Path("/usr/share/fonts/truetype") / name
    for name in (
        "dejavu/DejaVuSans.ttf",
        "dejavu/DejaVuSans-Bold.ttf",
        "dejavu/DejaVuSansMono.ttf",
        "dejavu/DejaVuSerif.ttf",
        "liberation/LiberationSans-Regular.ttf",
        "liberation/LiberationSans-Bold.ttf",
        "liberation/LiberationMono-Regular.ttf",
        "liberation/LiberationSerif-Regular.ttf",
        "liberation/LiberationSansNarrow-Regular.ttf",
    )
)
BITMAP_FONT = "bitmap"  # PIL's built-in bitmap font (fixed, about 11 px high)

# Synthetic people: none of these is anyone's record.
GIVEN_NAMES = ("JOHN", "MARIA", "AHMED", "LINDA", "KENJI", "OLGA", "PEDRO", "GRACE", "NOOR",
               "ROBERT", "ELENA", "DAVID")
FAMILY_NAMES = ("DOE", "GARCIA", "NOVAK", "MORGAN", "TANAKA", "OKAFOR", "LINDQVIST", "MARTIN",
                "HUSSEIN", "KOWALSKI", "FERREIRA", "BRENNAN")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

US_LABELS = ("LT KIDNEY", "Gain 52%", "MI 0.9", "TIS 0.4", "C5-1", "Depth 16cm", "FR 24Hz",
             "ABDOMEN", "PWR 100%", "DR 60", "Harm", "RT LOBE")
SCREEN_LABELS = ("Series 3", "Window 400/40", "Zoom 150%", "Slice 12/40", "Axial", "Layout",
                 "Measure", "Export", "Settings", "T2 FLAIR", "Contrast", "Report")


@dataclass(frozen=True)
class Subject:
    """The identifying values a header would hold for one synthetic subject."""

    family: str
    given: str
    patient_id: str
    birth_date: str  # DICOM DA, YYYYMMDD
    study_date: str
    accession: str

    @property
    def header_values(self) -> tuple[str, ...]:
        """What the pipeline passes to ``redact_file`` as identifiers."""
        return (f"{self.family}^{self.given}", self.patient_id, self.birth_date, self.study_date,
                self.accession)


@dataclass(frozen=True)
class PlantedWord:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the ink (x1/y1 exclusive)
    identifier: bool


@dataclass
class TextImage:
    kind: str  # "ultrasound" or "screenshot"
    pixels: np.ndarray  # (rows, columns) or (rows, columns, 3), uint8
    words: list[PlantedWord]
    subject: Subject

    @property
    def identifier_words(self) -> list[PlantedWord]:
        return [w for w in self.words if w.identifier]

    def text_mask(self) -> np.ndarray:
        """True inside every planted word's ink box."""
        mask = np.zeros(self.pixels.shape[:2], bool)
        for word in self.words:
            x0, y0, x1, y1 = word.box
            mask[y0:y1, x0:x1] = True
        return mask


def available_fonts() -> list[str]:
    return [str(p) for p in FONT_FILES if p.exists()] + [BITMAP_FONT]


def _font(name: str, size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    if name == BITMAP_FONT:
        return ImageFont.load_default_imagefont()
    return ImageFont.truetype(name, size)


def make_subject(rng: random.Random) -> Subject:
    def date(first_year: int, last_year: int) -> str:
        year = rng.randint(first_year, last_year)
        return f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"

    return Subject(
        family=rng.choice(FAMILY_NAMES),
        given=rng.choice(GIVEN_NAMES),
        patient_id=rng.choice(("", "MRN", "P")) + str(rng.randint(10**6, 10**9)),
        birth_date=date(1935, 2005),
        study_date=date(2010, 2025),
        accession="A" + str(rng.randint(10**5, 10**7)),
    )


def format_date(da: str, rng: random.Random) -> str:
    """One of the ways devices burn a DICOM date into pixels."""
    y, m, d = da[:4], da[4:6], da[6:8]
    return rng.choice((f"{d}/{m}/{y}", f"{y}-{m}-{d}", f"{d}-{MONTHS[int(m) - 1]}-{y}",
                       f"{m}.{d}.{y}", f"{y}/{m}/{d}"))


def _identifier_lines(subject: Subject, rng: random.Random) -> list[list[tuple[str, bool]]]:
    """Lines of (word, is_identifier): labels are plain text, values identify."""
    name = rng.choice(((subject.family + ",", subject.given), (subject.given, subject.family),
                       (f"{subject.family}^{subject.given}",)))
    lines = [
        [("Name:", False)] + [(part, True) for part in name],
        [("ID:", False), (subject.patient_id, True)],
        [("DOB", False), (format_date(subject.birth_date, rng), True)],
        [(format_date(subject.study_date, rng), True),
         (f"{rng.randint(7, 18):02d}:{rng.randint(0, 59):02d}", False)],
        [("Acc", False), (subject.accession, True)],
    ]
    rng.shuffle(lines)
    return lines


class _Canvas:
    """An image being drawn on, recording every word's ink box."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels.astype(np.float32)
        self.words: list[PlantedWord] = []

    def line(self, x: int, y: int, words: list[tuple[str, bool]], font_name: str, size: int,
             colour: tuple[int, int, int], anchor_right: bool = False, max_width: int = 0) -> int:
        """Draw one line of words at (x, y); returns the line height used."""
        font = _font(font_name, size)
        while max_width and size > 8 and font_name != BITMAP_FONT and \
                sum(font.getbbox(t)[2] for t, _ in words) + size * len(words) > max_width:
            size -= 1
            font = _font(font_name, size)
        space = max(3, int(font.getlength(" "))) if hasattr(font, "getlength") else 6
        widths = [int(font.getbbox(text)[2]) for text, _ in words]
        total = sum(widths) + space * (len(words) - 1)
        if anchor_right:
            x -= total
        height = 0
        for (text, identifier), width in zip(words, widths):
            self._word(x, y, text, identifier, font, colour)
            height = max(height, font.getbbox(text)[3])
            x += width + space
        return height

    def _word(self, x: int, y: int, text: str, identifier: bool, font, colour) -> None:
        rows, cols = self.pixels.shape[:2]
        layer = Image.new("L", (cols, rows), 0)
        ImageDraw.Draw(layer).text((x, y), text, font=font, fill=255)
        alpha = np.asarray(layer, np.float32) / 255.0
        ys, xs = np.nonzero(alpha)
        if ys.size == 0:
            return
        if self.pixels.ndim == 2:
            self.pixels += alpha * (float(np.mean(colour)) - self.pixels)
        else:
            self.pixels += alpha[..., None] * (np.asarray(colour, np.float32) - self.pixels)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        self.words.append(PlantedWord(text, box, identifier))

    def result(self) -> np.ndarray:
        return np.clip(np.rint(self.pixels), 0, 255).astype(np.uint8)


def _fan(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A sector of smoothed speckle with a dark cyst, like a curved-array B-mode image."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    apex_y, apex_x = -0.15 * rows, cols / 2
    radius = np.hypot(yy - apex_y, xx - apex_x)
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    inside = (np.abs(angle) < 32) & (radius > 0.3 * rows) & (radius < 1.0 * rows)
    speckle = ndimage.gaussian_filter(rng.rayleigh(1.0, (rows, cols)).astype(np.float32), 1.2)
    depth_gain = np.clip(1.2 - radius / (1.6 * rows), 0.3, 1.0)
    image = speckle / speckle.max() * 255 * 1.6 * depth_gain
    cyst = ((yy - 0.6 * rows) / (0.08 * rows)) ** 2 + ((xx - apex_x) / (0.1 * cols)) ** 2 < 1
    image[cyst] *= 0.15
    return np.where(inside, np.clip(image, 0, 230), 0).astype(np.float32)


def ultrasound_image(seed: int, rows: int = 480, cols: int = 640, rgb: bool = True) -> TextImage:
    rng = random.Random(seed)
    subject = make_subject(rng)
    fan = _fan(rows, cols, np.random.default_rng(seed))
    canvas = _Canvas(np.repeat(fan[..., None], 3, axis=2) if rgb else fan)
    fonts = available_fonts()
    colours = (((255, 255, 255), (255, 255, 0), (180, 180, 180), (0, 255, 255), (120, 255, 120))
               if rgb else ((255, 255, 255), (200, 200, 200), (150, 150, 150)))
    lines = _identifier_lines(subject, rng)
    margin = max(4, cols // 80)
    # Identifier lines stacked in the top corners, labels along the bottom corners.
    corners = [(margin, False), (cols - margin, True)]
    next_y = [margin, margin]
    for i, words in enumerate(lines):
        x, right = corners[i % 2]
        size = rng.randint(max(9, rows // 45), max(14, rows // 18))
        # Keep corner text off the sector, where devices put it.
        height = canvas.line(x, next_y[i % 2], words, rng.choice(fonts), size,
                             rng.choice(colours), anchor_right=right, max_width=int(cols * 0.36))
        next_y[i % 2] += max(height, size) + rng.randint(6, 12)
    for x, right in ((margin, False), (cols - margin, True)):
        size = rng.randint(max(9, rows // 45), max(14, rows // 20))
        words = [(w, False) for w in rng.choice(US_LABELS).split()]
        canvas.line(x, rows - margin - int(size * 1.3), words, rng.choice(fonts), size,
                    rng.choice(colours), anchor_right=right)
    return TextImage("ultrasound", canvas.result(), canvas.words, subject)


def screenshot_image(seed: int, rows: int = 480, cols: int = 640, rgb: bool = True) -> TextImage:
    from scipy import ndimage

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    subject = make_subject(rng)
    dark = rng.random() < 0.5
    window = (40, 40, 46) if dark else (236, 236, 232)
    panel = (60, 64, 72) if dark else (250, 250, 250)
    title = rng.choice(((30, 60, 120), (20, 20, 20), (90, 30, 30)))
    ink = (230, 230, 230) if dark else (20, 20, 40)
    pixels = np.empty((rows, cols, 3), np.float32)
    pixels[:] = window
    bar = max(18, rows // 16)
    pixels[:bar] = title
    side = min(max(cols // 3, 190), cols // 2)
    pixels[bar + 6:rows - 6, 6:side] = panel
    # Viewport: a smooth grey "slice" with a bright ring and soft blobs.
    vx0, vy0, vx1, vy1 = side + 8, bar + 6, cols - 6, rows - 6
    yy, xx = np.mgrid[vy0:vy1, vx0:vx1].astype(np.float32)
    cy, cx = (vy0 + vy1) / 2, (vx0 + vx1) / 2
    r = np.hypot((yy - cy) / (0.42 * (vy1 - vy0)), (xx - cx) / (0.38 * (vx1 - vx0)))
    ring = np.where(np.abs(r - 1.02) < 0.03, 200, 0)
    slice_ = np.where(r < 1, 110 + 60 * np.cos(6 * r), 0) + ring
    slice_ += ndimage.gaussian_filter(nrng.normal(0, 25, slice_.shape), 3) * (r < 1)
    pixels[vy0:vy1, vx0:vx1] = np.clip(slice_, 0, 255)[..., None]
    if not rgb:
        pixels = pixels.mean(axis=2)
    canvas = _Canvas(pixels)
    fonts = available_fonts()
    # Title bar: plain label plus the patient name.
    size = max(10, bar - 8)
    canvas.line(8, 3, [("Viewer", False), ("-", False), (subject.family, True)],
                rng.choice(fonts), size, (255, 255, 255))
    y = bar + 14
    lines = _identifier_lines(subject, rng)
    lines.append([(w, False) for w in rng.choice(SCREEN_LABELS).split()])
    for words in lines:
        size = rng.randint(max(9, rows // 45), max(13, rows // 26))
        height = canvas.line(14, y, words, rng.choice(fonts), size, ink, max_width=side - 24)
        y += max(height, size) + rng.randint(8, 16)
    # Labels over the viewport corners, as viewers draw them.
    canvas.line(vx0 + 6, vy0 + 6, [(w, False) for w in rng.choice(SCREEN_LABELS).split()],
                rng.choice(fonts), rng.randint(10, 16), (255, 255, 120))
    return TextImage("screenshot", canvas.result(), canvas.words, subject)


def test_set(count: int, rows: int = 480, cols: int = 640, first_seed: int = 0,
             rgb: bool = True) -> list[TextImage]:
    """``count`` images, alternating ultrasound-like and screenshot-like."""
    makers = (ultrasound_image, screenshot_image)
    return [makers[i % 2](first_seed + i, rows, cols, rgb) for i in range(count)]


def to_dicom(image: TextImage, path: Path, frames: int = 1, modality: str | None = None) -> Path:
    """Write ``image`` as an uncompressed DICOM file (``frames`` identical frames), header holding
    the subject's identifiers as a real file would."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = image.pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ("1.2.840.10008.5.1.4.1.1.6.1" if image.kind == "ultrasound"
                                    else "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality or ("US" if image.kind == "ultrasound" else "OT")
    ds.PatientName = f"{image.subject.family}^{image.subject.given}"
    ds.PatientID = image.subject.patient_id
    ds.PatientBirthDate = image.subject.birth_date
    ds.StudyDate = image.subject.study_date
    ds.AccessionNumber = image.subject.accession
    ds.BurnedInAnnotation = "YES"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixels.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(np.stack([pixels] * frames)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def word_is_filled(output: np.ndarray, word: PlantedWord) -> bool:
    """The word's whole ink box holds one value: its glyphs are gone, not just touched."""
    x0, y0, x1, y1 = word.box
    region = output[y0:y1, x0:x1].reshape((y1 - y0) * (x1 - x0), -1)
    return bool((region == region[0]).all())


def _folded(text: str) -> str:
    return "".join(c for c in text.upper() if c.isalnum())


def words_read_back(output: np.ndarray, words: list[PlantedWord]) -> set[str]:
    """Planted words that plain Tesseract still reads in ``output`` (2x upscaled, both
    polarities), compared fuzzily so an OCR slip does not hide a leak."""
    from difflib import SequenceMatcher

    import pytesseract

    gray = Image.fromarray(output).convert("L")
    gray = gray.resize((gray.width * 2, gray.height * 2), Image.LANCZOS)
    tokens: set[str] = set()
    for image in (gray, Image.eval(gray, lambda v: 255 - v)):
        text = pytesseract.image_to_string(image, config="--psm 11")
        tokens |= {_folded(t) for t in text.split() if _folded(t)}
    found = set()
    for word in words:
        target = _folded(word.text)
        if any(target in t or SequenceMatcher(None, target, t).ratio() >= 0.8 for t in tokens
               if len(t) >= 3):
            found.add(word.text)
    return found


def changed_share_outside_text(original: np.ndarray, output: np.ndarray, image: TextImage) -> float:
    """Share of the pixels outside every planted word's ink box that the redaction changed."""
    changed = original != output
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    outside = ~image.text_mask()
    return float(changed[outside].mean())
