// teleread's configuration of OHIF (served at /ohif/app-config.js): one data source, this
// server's DICOMweb, reached on the same origin with the reader's session cookie.
const dicomweb = `${window.location.origin}/dicomweb`;

window.config = {
  routerBasename: "/ohif",
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  // OHIF's notice that it is not a certified device: once per browser every 30 days
  investigationalUseDialog: { option: "configure", days: 30 },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  defaultDataSourceName: "teleread",
  dataSources: [
    {
      namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
      sourceName: "teleread",
      configuration: {
        friendlyName: "teleread",
        name: "teleread",
        qidoRoot: dicomweb,
        wadoRoot: dicomweb,
        wadoUriRoot: dicomweb,
        // QIDO answers includefield, matches * and ? (names case-insensitively) and
        // accepts fuzzymatching without doing it
        qidoSupportsIncludeField: true,
        supportsWildcard: true,
        supportsFuzzyMatching: false,
        supportsReject: false,
        imageRendering: "wadors",
        // GET .../series/{series}/thumbnail?viewport=256,256 (a JPEG of a middle image)
        thumbnailRendering: "thumbnail",
        thumbnailRequestStrategy: "fetch",
        enableStudyLazyLoad: true,
        omitQuotationForMultipartRequest: true,
        // frames decoded by the server (Explicit VR Little Endian), whatever the stored
        // syntax (the gateway's JPEG-LS, a modality's JPEG): OHIF's own JPEG-LS and JPEG
        // decoders evaluate strings as code, which this page's policy does not allow
        requestTransferSyntaxUID: "1.2.840.10008.1.2.1",
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
