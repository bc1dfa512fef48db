// A small DICOM Part-10 reader for the viewer: little-endian transfer syntaxes with native
// (uncompressed) greyscale or RGB pixel data. Anything else (compressed, palette or YBR
// colour, a Modality or VOI LUT Sequence) is reported as `compressed` so the caller can ask
// the server to render it instead.

export const IMPLICIT_LE = "1.2.840.10008.1.2";
export const EXPLICIT_LE = "1.2.840.10008.1.2.1";
const DEFLATED_LE = "1.2.840.10008.1.2.1.99";
const EXPLICIT_BE = "1.2.840.10008.1.2.2";
const LONG_VRS = new Set([
  "OB",
  "OD",
  "OF",
  "OL",
  "OV",
  "OW",
  "SQ",
  "SV",
  "UC",
  "UN",
  "UR",
  "UT",
  "UV",
]);
const UNDEFINED = 0xffffffff;
const PIXEL_DATA = 0x7fe00010;

// tags we read -> how: "us" (unsigned short), "str" (text), "ds" (numbers, backslash-separated)
const WANTED = {
  0x00020010: "str", // TransferSyntaxUID
  0x00080060: "str", // Modality
  0x00180050: "ds", // SliceThickness
  0x00181164: "ds", // ImagerPixelSpacing
  0x00200013: "str", // InstanceNumber
  0x00200020: "str", // PatientOrientation
  0x00200037: "ds", // ImageOrientationPatient
  0x00201041: "ds", // SliceLocation
  0x00280002: "us", // SamplesPerPixel
  0x00280004: "str", // PhotometricInterpretation
  0x00280006: "us", // PlanarConfiguration
  0x00280008: "str", // NumberOfFrames
  0x00280010: "us", // Rows
  0x00280011: "us", // Columns
  0x00280030: "ds", // PixelSpacing
  0x00280100: "us", // BitsAllocated
  0x00280101: "us", // BitsStored
  0x00280103: "us", // PixelRepresentation
  0x00281050: "ds", // WindowCenter
  0x00281051: "ds", // WindowWidth
  0x00281052: "ds", // RescaleIntercept
  0x00281053: "ds", // RescaleSlope
};

// tags whose presence (at the top level) is enough to know: the server renders such images
const LUT_SEQUENCES = new Set([0x00283000, 0x00283010]); // Modality, VOI LUT Sequence
const SHOWN_HERE = new Set(["MONOCHROME1", "MONOCHROME2", "RGB"]);

export class DicomError extends Error {}

const text = new TextDecoder("latin1");

function readValue(view, offset, length, how) {
  if (how === "us") return view.getUint16(offset, true);
  const s = text
    .decode(new Uint8Array(view.buffer, view.byteOffset + offset, length))
    .replace(/[\0 ]+$/, "")
    .trim();
  if (how === "ds")
    return s
      .split("\\")
      .map(Number)
      .filter((n) => Number.isFinite(n));
  return s;
}

// Walk elements from `offset`; return {offset, tags, pixelOffset, pixelLength}.
// `stopAt` ends an item of undefined length (FFFE,E00D).
function walk(view, offset, end, implicit, out, topLevel) {
  while (offset + 8 <= end) {
    const group = view.getUint16(offset, true);
    const element = view.getUint16(offset + 2, true);
    const tag = ((group << 16) | element) >>> 0;
    if (group === 0xfffe) {
      // item delimiter inside a nested dataset, or sequence delimiter
      return offset + 8;
    }
    let vr = null;
    let length;
    let header;
    if (implicit && group !== 0x0002) {
      length = view.getUint32(offset + 4, true);
      header = 8;
    } else {
      vr = String.fromCharCode(view.getUint8(offset + 4), view.getUint8(offset + 5));
      if (LONG_VRS.has(vr)) {
        length = view.getUint32(offset + 8, true);
        header = 12;
      } else {
        length = view.getUint16(offset + 6, true);
        header = 8;
      }
    }
    const valueOffset = offset + header;
    if (topLevel && LUT_SEQUENCES.has(tag)) out.tags[tag] = true;
    if (topLevel && tag === PIXEL_DATA) {
      out.pixelOffset = valueOffset;
      out.pixelLength = length;
      return valueOffset;
    }
    if (length === UNDEFINED) {
      // a sequence (or UN) of undefined length: walk its items
      offset = skipItems(view, valueOffset, end, implicit || vr === "UN");
      continue;
    }
    if (valueOffset + length > end) throw new DicomError("truncated element");
    if (topLevel && WANTED[tag] && length > 0) {
      out.tags[tag] = readValue(view, valueOffset, length, WANTED[tag]);
    }
    offset = valueOffset + length;
  }
  return offset;
}

function skipItems(view, offset, end, implicit) {
  while (offset + 8 <= end) {
    const group = view.getUint16(offset, true);
    const element = view.getUint16(offset + 2, true);
    const length = view.getUint32(offset + 4, true);
    offset += 8;
    if (group !== 0xfffe) throw new DicomError("bad sequence item");
    if (element === 0xe0dd) return offset; // sequence delimiter
    if (element === 0xe000) {
      if (length === UNDEFINED) offset = walk(view, offset, end, implicit, { tags: {} }, false);
      else offset += length;
    }
  }
  throw new DicomError("unterminated sequence");
}

// Parse a Part-10 file (ArrayBuffer). Returns the image description and, for native data,
// a typed array of stored pixel values.
export function parseDicom(buffer) {
  const view = new DataView(buffer);
  let offset = 0;
  if (buffer.byteLength >= 132 && text.decode(new Uint8Array(buffer, 128, 4)) === "DICM") {
    offset = 132;
  }
  const out = { tags: {}, pixelOffset: -1, pixelLength: 0 };
  // the file meta group is always explicit little endian; read it alone first
  let metaEnd = offset;
  while (metaEnd + 8 <= buffer.byteLength && view.getUint16(metaEnd, true) === 0x0002) {
    const vr = String.fromCharCode(view.getUint8(metaEnd + 4), view.getUint8(metaEnd + 5));
    const long = LONG_VRS.has(vr);
    const length = long ? view.getUint32(metaEnd + 8, true) : view.getUint16(metaEnd + 6, true);
    metaEnd += (long ? 12 : 8) + length;
  }
  walk(view, offset, metaEnd, false, out, true);
  const ts = out.tags[0x00020010] || IMPLICIT_LE;
  const info = describe(out.tags, ts);
  // deflated and big-endian data sets cannot be walked here; the server renders them
  if (ts === DEFLATED_LE || ts === EXPLICIT_BE) return { ...info, compressed: true };
  walk(view, metaEnd, buffer.byteLength, ts === IMPLICIT_LE, out, true);
  Object.assign(info, describe(out.tags, ts));
  // encapsulated (JPEG, JPEG 2000, RLE...) pixel data: described, not decoded
  if (ts !== IMPLICIT_LE && ts !== EXPLICIT_LE) return { ...info, compressed: true };
  // colour spaces, palettes and lookup tables: rendered by the server
  if (!SHOWN_HERE.has(info.photometric) || [...LUT_SEQUENCES].some((t) => out.tags[t])) {
    return { ...info, compressed: true };
  }
  if (out.pixelOffset < 0) throw new DicomError("no pixel data");
  if (out.pixelLength === UNDEFINED) return { ...info, compressed: true };
  const frameBytes = info.rows * info.columns * info.samples * (info.bitsAllocated / 8);
  if (!frameBytes || out.pixelOffset + frameBytes > buffer.byteLength) {
    throw new DicomError("pixel data shorter than the image");
  }
  // copy the first frame so the typed array is aligned
  const bytes = buffer.slice(out.pixelOffset, out.pixelOffset + frameBytes);
  let pixels;
  if (info.bitsAllocated === 16)
    pixels = info.signed ? new Int16Array(bytes) : new Uint16Array(bytes);
  else if (info.bitsAllocated === 8)
    pixels = info.signed ? new Int8Array(bytes) : new Uint8Array(bytes);
  else if (info.bitsAllocated === 32)
    pixels = info.signed ? new Int32Array(bytes) : new Uint32Array(bytes);
  else throw new DicomError(`unsupported BitsAllocated ${info.bitsAllocated}`);
  if (info.bitsAllocated === 16 && info.bitsStored < 16 && info.signed) {
    // sign-extend values stored in fewer bits
    const shift = 32 - info.bitsStored;
    for (let i = 0; i < pixels.length; i++) pixels[i] = (pixels[i] << shift) >> shift;
  }
  return { ...info, compressed: false, pixels };
}

function describe(tags, ts) {
  const wc = tags[0x00281050] || [];
  const ww = tags[0x00281051] || [];
  const bitsAllocated = tags[0x00280100] || 16;
  return {
    transferSyntax: ts,
    modality: tags[0x00080060] || "",
    instanceNumber: Number(tags[0x00200013]) || null,
    rows: tags[0x00280010] || 0,
    columns: tags[0x00280011] || 0,
    samples: tags[0x00280002] || 1,
    photometric: tags[0x00280004] || "MONOCHROME2",
    planar: tags[0x00280006] || 0,
    bitsAllocated,
    bitsStored: tags[0x00280101] || bitsAllocated,
    signed: tags[0x00280103] === 1,
    slope: (tags[0x00281053] || [1])[0] || 1,
    intercept: (tags[0x00281052] || [0])[0] || 0,
    windowCenter: wc.length ? wc[0] : null,
    windowWidth: ww.length ? ww[0] : null,
    sliceLocation: (tags[0x00201041] || [null])[0],
    sliceThickness: (tags[0x00180050] || [null])[0],
    pixelSpacing: tags[0x00280030] || tags[0x00181164] || null,
    orientation: (tags[0x00200037] || []).length === 6 ? tags[0x00200037] : null,
    patientOrientation: tags[0x00200020] ? tags[0x00200020].split("\\") : null,
  };
}

const OPPOSITE = { L: "R", R: "L", A: "P", P: "A", H: "F", F: "H" };

// The patient direction of a vector in patient coordinates (x to the left, y to the back,
// z to the head): its main axes' letters, strongest first ("L", "LP" when oblique).
function direction([x, y, z]) {
  const axes = [
    [Math.abs(x), x > 0 ? "L" : "R"],
    [Math.abs(y), y > 0 ? "P" : "A"],
    [Math.abs(z), z > 0 ? "H" : "F"],
  ].sort((a, b) => b[0] - a[0]);
  return axes
    .filter(([size], i) => i === 0 || size > 0.25)
    .map(([, letter]) => letter)
    .join("")
    .slice(0, 2);
}

// The letters at the image's edges: {left, right, top, bottom}, from Image Orientation
// (Patient) (CT, MR) or Patient Orientation (projection images); null when neither says.
export function orientationLabels(image) {
  let right;
  let bottom;
  if (image.orientation) {
    right = direction(image.orientation.slice(0, 3));
    bottom = direction(image.orientation.slice(3, 6));
  } else if (image.patientOrientation?.length === 2) {
    [right, bottom] = image.patientOrientation;
  } else {
    return null;
  }
  const flip = (label) => [...label].map((c) => OPPOSITE[c] || "").join("");
  if (!right || !bottom) return null;
  return { right, bottom, left: flip(right), top: flip(bottom) };
}

// Default window for an image: its own, else one for the modality, else min/max.
export function defaultWindow(image) {
  if (image.windowWidth && image.windowWidth > 0) {
    return { center: image.windowCenter, width: image.windowWidth };
  }
  if (image.modality === "CT") return { center: 40, width: 80 };
  let min = Infinity;
  let max = -Infinity;
  const p = image.pixels || [];
  for (let i = 0; i < p.length; i += 7) {
    if (p[i] < min) min = p[i];
    if (p[i] > max) max = p[i];
  }
  if (!Number.isFinite(min)) return { center: 128, width: 256 };
  min = min * image.slope + image.intercept;
  max = max * image.slope + image.intercept;
  return { center: (min + max) / 2, width: Math.max(1, max - min) };
}

// Apply rescale + linear window (PS3.3 C.11.2.1.2) into RGBA ImageData.
export function renderToImageData(image, center, width, imageData) {
  const { pixels, slope, intercept, samples } = image;
  const out = imageData.data;
  const n = image.rows * image.columns;
  const invert = image.photometric === "MONOCHROME1";
  if (samples === 3) {
    for (let i = 0; i < n; i++) {
      const [r, g, b] =
        image.planar === 1
          ? [pixels[i], pixels[i + n], pixels[i + 2 * n]]
          : [pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2]];
      out[4 * i] = r;
      out[4 * i + 1] = g;
      out[4 * i + 2] = b;
      out[4 * i + 3] = 255;
    }
    return imageData;
  }
  const w = Math.max(1, width);
  const low = center - 0.5 - (w - 1) / 2;
  const scale = 255 / Math.max(1, w - 1);
  for (let i = 0; i < n; i++) {
    const v = pixels[i] * slope + intercept;
    let g = v <= low ? 0 : v > low + w - 1 ? 255 : (v - low) * scale;
    if (invert) g = 255 - g;
    const o = 4 * i;
    out[o] = g;
    out[o + 1] = g;
    out[o + 2] = g;
    out[o + 3] = 255;
  }
  return imageData;
}
